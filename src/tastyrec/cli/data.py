"""Commands that build data: setup, export-csv, ingest, features."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tastyrec.config import Workspace
from tastyrec.cli.base import (JsonOpt, StepDaysOpt, TrainWindowsOpt, WindowDaysOpt, app, fail, out, print_counts,
                                progress_bar)


@app.command()
def setup(ctx: typer.Context,
          customers: Annotated[int, typer.Option(help="Loyalty customers to generate.")] = 20_000,
          seed: Annotated[int, typer.Option(help="Seed of the synthetic data set.")] = 42,
          from_csv: Annotated[Optional[Path], typer.Option(
              "--from-csv", help="Load the seed's stage layout from this folder instead.")] = None,
          force: Annotated[bool, typer.Option(help="Rebuild an existing warehouse.")] = False,
          as_json: JsonOpt = False) -> None:
    """Create the DuckDB warehouse from synthetic data (default) or from CSV files."""
    from tastyrec.warehouse.load import WarehouseError, setup_from_csv, setup_synthetic

    ws: Workspace = ctx.obj
    try:
        with progress_bar(enabled=not as_json) as progress:
            if from_csv:
                result = setup_from_csv(ws, from_csv, force=force, progress=progress)
            else:
                result = setup_synthetic(ws, customers=customers, seed=seed, force=force, progress=progress)
    except WarehouseError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(result)))
    else:
        print_counts(result.row_counts, f"{result.warehouse} ({result.source}, {result.seconds} s)")


@app.command("export-csv")
def export_csv(ctx: typer.Context, target: Annotated[Path, typer.Argument(help="Folder to write.")]) -> None:
    """Write the raw tables in the seed's stage layout (raw_pos/<table>/<table>.csv.gz, ...)."""
    from tastyrec.warehouse.load import WarehouseError, export_csv as export

    try:
        with progress_bar() as progress:
            written = export(ctx.obj, target, progress=progress)
    except WarehouseError as e:
        fail(str(e))
    for table, path in written.items():
        out.print(f"{table} -> {path}")


@app.command()
def ingest(ctx: typer.Context,
           from_csv: Annotated[Path, typer.Option(
               "--from-csv", help="Folder in the seed's stage layout: raw_pos/order_header/*.csv[.gz], "
                                  "raw_pos/order_detail/..., raw_customer/customer_loyalty/... (any of them).")],
           as_json: JsonOpt = False) -> None:
    """Append new orders and new or changed loyalty customers to the warehouse, all or nothing
    (rows already there are skipped); then `tastyrec features` moves the features forward."""
    from tastyrec.warehouse.load import WarehouseError
    from tastyrec.warehouse.ingest import ingest_csv

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = ingest_csv(ctx.obj, from_csv, progress=progress)
    except WarehouseError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title=f"{result.warehouse} (ingest {result.source}, {result.seconds} s)")
    for column in ("table", "delivered", "added", "already there", "changed", "rows now"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, n in result.tables.items():
        table.add_row(name, *(f"{v:,}" for v in (n["rows"], n["added"], n["already_there"], n["changed"],
                                                 result.row_counts[name])))
    out.print(table)
    if not result.changed_anything:
        out.print(f"nothing new: the warehouse is unchanged (orders run to the day before {result.data_end})")
        return
    moved = (f"moved from {result.data_end_before} to {result.data_end}" if result.data_end != result.data_end_before
             else f"still {result.data_end}")
    out.print(f"data end (the day after the last order) {moved}: run `tastyrec features` to move the serving "
              "snapshot and the windows there")


@app.command()
def features(ctx: typer.Context, window_days: WindowDaysOpt = None, train_windows: TrainWindowsOpt = None,
             step_days: StepDaysOpt = None,
             online_store: Annotated[Optional[str], typer.Option(
                 help="'sqlite' (the default) or redis://HOST:PORT\\[/DB]; the workspace remembers it.")] = None,
             until: Annotated[Optional[datetime], typer.Option(
                 formats=["%Y-%m-%d"], show_default=False,
                 help="Build as if the data ended the day before this date (YYYY-MM-DD): the test window "
                      "ends there (then `tastyrec evaluate` scores that window), and so does what serving sees.")] = None,
             as_json: JsonOpt = False) -> None:
    """Compute feature tables, apply the Feast repo and materialise the online store."""
    from tastyrec.features.build import FeaturesError, build_features

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = build_features(ctx.obj, progress=progress, window_days=window_days,
                                    train_windows=train_windows, step_days=step_days, online_store=online_store,
                                    until=until.date() if until else None)
    except FeaturesError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(result)))
        return
    print_counts(result.rows, f"{result.repo} ({result.seconds} s), online store {result.online_store}")
    w = result.windows
    out.print(f"{w['window_days']}-day windows over {result.data_span[0]} .. {result.data_span[1]}; "
              f"{w['train_windows']} training cutoff(s) {w['step_days']} days apart")
    out.print("cutoffs: " + ", ".join(f"{split} {', '.join(days)}" for split, days in result.cutoffs.items()))
    if result.until:
        last = datetime.fromisoformat(result.until).date() - timedelta(days=1)
        out.print(f"--until {result.until}: built as if the orders ended on {last} (later orders left out); "
                  "the test window ends there, and so does what serving sees")
