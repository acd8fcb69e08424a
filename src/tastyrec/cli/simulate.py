"""`tastyrec simulate`: the next days of the synthetic world's orders, as stage CSV for `ingest`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tastyrec.cli.base import JsonOpt, app, fail, out, progress_bar
from tastyrec.warehouse.simulate import CAMPAIGN_EFFECT_DAYS, DEFAULT_LIFT


@app.command()
def simulate(ctx: typer.Context,
             days: Annotated[int, typer.Option(help="Days to simulate after the warehouse's last order.")],
             lift: Annotated[float, typer.Option(
                 help=f"Planted campaign effect: treated customers' list items get exp-utility x (1 + LIFT) for "
                      f"{CAMPAIGN_EFFECT_DAYS} days after the campaign's data end (0: none).")] = DEFAULT_LIFT,
             out_dir: Annotated[Optional[Path], typer.Option(
                 "--out", help="Folder for the stage CSV (default <home>/stage/simulated/<first day>_<last day>).")
             ] = None,
             seed: Annotated[Optional[int], typer.Option(
                 help="Seed of the new days (default: derived from the first simulated day).")] = None,
             as_json: JsonOpt = False) -> None:
    """Write the next days of synthetic orders (planted model, same customers) as stage CSV for `ingest`."""
    from tastyrec.warehouse.simulate import SimulateError, simulate as run

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = run(ctx.obj, days=days, lift=lift, out=out_dir, seed=seed, progress=progress)
    except SimulateError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(result)))
        return
    out.print(f"{result.first_day} .. {result.last_day} ({result.days} days, seed {result.seed}, lift {result.lift:g}): "
              f"{result.orders:,} orders ({result.loyalty_orders:,} loyalty, {result.walk_in_orders:,} walk-in), "
              f"{result.detail_rows:,} lines, order ids {result.order_ids[0]:,}..{result.order_ids[1]:,} "
              f"({result.seconds} s)")
    for path in result.files.values():
        out.print(f"  {path}")
    if result.campaigns:
        table = Table(title="planted campaign effects (synth.campaign_effect)")
        for name in ("campaign", "data end", "days", "customers", "treated", "P(buys | treated)",
                     "P(buys | not)", "share uplift", "items uplift", "revenue uplift"):
            table.add_column(name, justify="left" if name == "campaign" else "right")
        for row in result.campaigns:
            table.add_row(row["run_id"], row["data_end"], str(row["days"]), f"{row['customers']:,}",
                          f"{row['treated']:,}", f"{row['share_if_treated']:.3f}", f"{row['share_if_not_treated']:.3f}",
                          f"{row['planted_share_uplift']:+.3f}", f"{row['planted_items_uplift']:+.3f}",
                          f"{row['planted_revenue_uplift']:+.2f}")
        out.print(table)
    out.print(f"next: tastyrec ingest --from-csv {result.out}")
