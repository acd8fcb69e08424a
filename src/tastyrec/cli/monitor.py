"""`tastyrec monitor`: the champion's ranking quality on each new window, and its inputs' drift."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tastyrec.cli.base import JsonOpt, _number, app, err, fail, out, progress_bar, warn


@app.command()
def monitor(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Watch the champion: its NDCG@10 (overall and on new items) against the baselines on every
    complete window of orders after its training data, and the drift of each model input
    (population stability index) between its training snapshot and the serving snapshot of now.
    Logged to MLflow (experiment "tastyrec-monitor") and shown on the app's Model page."""
    from tastyrec.monitor import MonitorError, monitor as run_monitor
    from tastyrec.registry import RegistryError

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = run_monitor(ctx.obj, progress=progress)
    except (MonitorError, RegistryError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    print_report(result)


def print_report(result) -> None:
    from tastyrec.monitor import METRIC_WORDS, WATCHED

    champion = result.champion
    out.print(f"champion: version {champion['version']} ({champion['kind']}), trained on data up to "
              f"{champion['trained_until']} (exclusive), {champion['window_days']}-day windows; "
              f"orders run to {result.orders_until}")
    if result.message:
        out.print(result.message, style="bold")
    if result.windows:
        methods = list(result.windows[-1].methods)
        for metric in WATCHED:
            table = Table(title=f"{METRIC_WORDS[metric]} per window (champion vs baselines)")
            table.add_column("window")
            for m in methods:
                table.add_column(f"{m} (champion)" if m == result.windows[-1].champion else m, justify="right")
            for w in result.windows:
                label = f"{w.index}: {w.first_day} .. {w.last_day}" + (" (cached)" if w.cached else "")
                table.add_row(label, *(_number(w.figure(m, metric)) for m in methods))
            out.print(table)
        reused, computed = result.cache["reused"], result.cache["computed"]
        if reused:
            out.print(f"windows {', '.join(map(str, reused))} reused from {result.cache['folder']} (same warehouse, "
                      f"champion and window); {'windows ' + ', '.join(map(str, computed)) if computed else 'none'} "
                      "computed now")
    drift = result.drift
    t = drift["thresholds"]
    table = Table(title=f"input drift: training snapshot {drift['reference']['as_of']} vs serving snapshot "
                        f"{drift['current']['as_of']} (PSI < {t['moderate']} no drift, {t['moderate']}-{t['major']} "
                        f"moderate, > {t['major']} major)")
    for column in ("input", "kind", "PSI", "bins", "drift"):
        table.add_column(column, justify="right" if column in ("PSI", "bins") else "left")
    for d in drift["inputs"]:
        table.add_row(d["feature"], d["kind"], _number(d["psi"]), str(d["bins"]), d["level"])
    out.print(table)
    for warning in result.warnings:
        warn(warning)
    err.print(f"logged to MLflow: experiment {result.mlflow['experiment']}, run {result.mlflow['run_id']} "
              f"({result.seconds} s)")
