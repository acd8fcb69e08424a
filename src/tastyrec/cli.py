"""The `tastyrec` command line: thin Typer commands that call the stage functions and print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tastyrec.config import Workspace

# Never let Feast or MLflow reach for the network, whatever the caller's environment says.
os.environ["FEAST_USAGE"] = "False"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

app = typer.Typer(help="tastyrec: menu-item recommendations for Tasty Bytes loyalty customers.",
                  no_args_is_help=True, add_completion=False)
registry_app = typer.Typer(help="List model versions and move the champion alias.")
app.add_typer(registry_app, name="registry")
err = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=160)  # tables stay readable in logs

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@app.callback()
def main(ctx: typer.Context,
         home: Annotated[Optional[Path], typer.Option(
             "--home", envvar="TASTYREC_HOME", help="Workspace folder (default ./.tastyrec).")] = None) -> None:
    ctx.obj = Workspace.from_env(home)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A Rich progress bar on stderr; yields a (what, done, total) callback."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=not enabled, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def not_built(command: str) -> None:
    fail(f"`tastyrec {command}` is not built yet (see the open issues).", code=2)


def print_counts(counts: dict[str, int], title: str) -> None:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    out.print(table)


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
def features(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Compute feature tables, apply the Feast repo and materialise the online store."""
    from tastyrec.features.build import FeaturesError, build_features

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = build_features(ctx.obj, progress=progress)
    except FeaturesError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(result)))
        return
    print_counts(result.rows, f"{result.repo} ({result.seconds} s)")
    out.print("snapshots: " + ", ".join(result.snapshots))


METRICS = ("auc", "precision", "recall", "recall@3", "ndcg@3", "recall@10", "ndcg@10",
           "new_recall@10", "new_ndcg@10")


def print_evaluation(evaluation: dict) -> None:
    """The model, each baseline and the oracle side by side on the test window."""
    total = evaluation.get("test_customers_total", evaluation["customers"])
    table = Table(title=f"test window: {evaluation['customers']:,} of {total:,} test customers "
                        f"(seeded sample), {evaluation['rows']:,} rows")
    table.add_column("method")
    for m in METRICS:
        table.add_column(m, justify="right")
    rows = [("tastyrec dlrm", evaluation["model"])] + list(evaluation["baselines"].items())
    if evaluation["oracle"]:
        rows.append(("oracle (truth)", evaluation["oracle"]))
    for name, metrics in rows:
        table.add_row(name, *("-" if metrics.get(m) is None else f"{metrics[m]:.3f}" for m in METRICS))
    out.print(table)
    if evaluation["fraction_of_oracle_ndcg10"] is not None:
        out.print(f"NDCG@10 = {evaluation['fraction_of_oracle_ndcg10']:.3f} x the oracle's")
    out.print(f"NDCG@10 = {evaluation['lift_over_best_baseline_ndcg10']:.3f} x the best baseline's "
              f"({evaluation['best_baseline']})")


def train_options(epochs: int, nproc: int, batch_size: int, lr: float, max_samples: Optional[int],
                  split: str, model: str, resume: bool, quiet: bool):
    from tastyrec.experiment import TrainOptions

    return TrainOptions(epochs=epochs, nproc=nproc, batch_size=batch_size, lr=lr, max_samples=max_samples,
                        split=split, model=model, resume=resume, progress=not quiet)


EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation loss).")]
NprocOpt = Annotated[int, typer.Option(help="torchrun processes (DDP; gloo on CPU, nccl on GPUs).")]


@app.command()
def train(ctx: typer.Context,
          epochs: EpochsOpt = 4, nproc: NprocOpt = 1,
          batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 4096,
          lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-3,
          max_samples: Annotated[Optional[int], typer.Option(help="Cap on training rows.")] = None,
          split: Annotated[str, typer.Option(help="time (default) or random (the seed's).")] = "time",
          model: Annotated[str, typer.Option(help="dlrm or seed-dlrm.")] = "dlrm",
          resume: Annotated[bool, typer.Option(help="Continue the last unfinished run.")] = False,
          seed_samples: Annotated[int, typer.Option(
              help="Training rows for the seed's DLRM baseline (0 = skip it).")] = 10_000,
          as_json: JsonOpt = False) -> None:
    """Train with torchrun DDP, evaluate against baselines and the oracle, register in MLflow."""
    from tastyrec.experiment import TrainError, train_evaluate_register

    opts = train_options(epochs, nproc, batch_size, lr, max_samples, split, model, resume, as_json)
    try:
        job = train_evaluate_register(ctx.obj, opts, seed_samples=seed_samples)
    except (TrainError, ValueError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(asdict(job), default=str))
        return
    print_evaluation(job.evaluation)
    out.print(job.registry["decision"])


@app.command()
def evaluate(ctx: typer.Context,
             version: Annotated[Optional[str], typer.Option(help="Model version (default: champion).")] = None,
             as_json: JsonOpt = False) -> None:
    """Evaluate a registered model against the baselines and the oracle on the test window."""
    from tastyrec.evaluate import evaluate_registered
    from tastyrec.registry import RegistryError

    try:
        evaluation = evaluate_registered(ctx.obj, version or "champion")
    except RegistryError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(evaluation))
    else:
        print_evaluation(evaluation)


@app.command()
def recommend(as_json: JsonOpt = False) -> None:
    """Top-k menu items for customers."""
    not_built("recommend")


@app.command()
def pipeline(ctx: typer.Context,
             customers: Annotated[int, typer.Option(help="Loyalty customers to generate.")] = 20_000,
             seed: Annotated[int, typer.Option(help="Seed of the synthetic data set.")] = 42,
             epochs: EpochsOpt = 4, nproc: NprocOpt = 1,
             seed_samples: Annotated[int, typer.Option(
                 help="Training rows for the seed's DLRM baseline (0 = skip it).")] = 10_000,
             as_json: JsonOpt = False) -> None:
    """setup -> features -> train -> evaluate -> register, in one command."""
    from tastyrec.experiment import TrainError, TrainOptions, train_evaluate_register
    from tastyrec.features.build import build_features
    from tastyrec.warehouse.load import WarehouseError, setup_synthetic

    ws: Workspace = ctx.obj
    try:
        with progress_bar(enabled=not as_json) as progress:
            setup_result = setup_synthetic(ws, customers=customers, seed=seed, force=True, progress=progress)
            features_result = build_features(ws, progress=progress)
        job = train_evaluate_register(ws, TrainOptions(epochs=epochs, nproc=nproc, progress=not as_json),
                                      seed_samples=seed_samples)
    except (WarehouseError, TrainError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({"setup": asdict(setup_result), "features": asdict(features_result), **asdict(job)},
                         default=str))
        return
    print_evaluation(job.evaluation)
    out.print(job.registry["decision"])
    out.print(f"setup {setup_result.seconds} s, features {features_result.seconds} s, "
              f"train + evaluate + register {job.seconds} s")


@app.command()
def serve() -> None:
    """Start the REST inference service."""
    not_built("serve")


@app.command("app")
def streamlit_app() -> None:
    """Start the Streamlit app for marketing people."""
    not_built("app")


@registry_app.command("list")
def registry_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered versions, their test metrics and aliases."""
    from tastyrec.registry import list_versions

    versions = list_versions(ctx.obj)
    if as_json:
        print(json.dumps(versions, default=str))
        return
    table = Table(title="tastyrec-dlrm")
    for column in ("version", "aliases", "ndcg@10", "recall@10", "auc", "created"):
        table.add_column(column)
    for v in versions:
        table.add_row(str(v["version"]), ", ".join(v.get("aliases", [])), str(v.get("ndcg@10", "")),
                      str(v.get("recall@10", "")), str(v.get("auc", "")), str(v.get("created", "")))
    out.print(table)


@registry_app.command("promote")
def registry_promote(ctx: typer.Context, version: Annotated[int, typer.Argument()]) -> None:
    """Move the champion alias to VERSION by hand."""
    from tastyrec.registry import RegistryError, promote

    try:
        promote(ctx.obj, version)
    except RegistryError as e:
        fail(str(e))
    out.print(f"champion -> version {version}")


@registry_app.command("rollback")
def registry_rollback(ctx: typer.Context) -> None:
    """Move the champion alias back to the version that held it before."""
    from tastyrec.registry import RegistryError, rollback

    try:
        version = rollback(ctx.obj)
    except RegistryError as e:
        fail(str(e))
    out.print(f"champion -> version {version}")


if __name__ == "__main__":
    app()
