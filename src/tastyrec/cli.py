"""The `tastyrec` command line: thin Typer commands that call the stage functions and print."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

from enum import Enum

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tastyrec.config import Workspace
from tastyrec.model import MODEL_KINDS
from tastyrec.options import SEED_SAMPLES, SPLITS, TrainError, TrainOptions

# Choices the CLI refuses others of (Typer lists them in the error): one Enum per option.
ModelChoice = Enum("ModelChoice", {k: k for k in MODEL_KINDS}, type=str)
SplitChoice = Enum("SplitChoice", {k: k for k in SPLITS}, type=str)

# Warnings of libraries we use that a user can do nothing about (ibis' fetch_arrow_table inside
# Feast's DuckDB store, SQLAlchemy's noload inside MLflow, ...). Libraries add filters of their
# own when imported, so the CLI drops them where they are shown instead. Tests still see them.
THIRD_PARTY = re.compile(r"[/\\]site-packages[/\\](ibis|feast|mlflow|sqlalchemy|alembic|pydantic|"
                         r"google|pkg_resources|setuptools|sklearn|implicit|dask|pyarrow)[/\\]")
QUIET_LOGGERS = {"mlflow": "ERROR", "alembic": "WARNING"}  # INFO lines, the cloudpickle notice


def quiet_third_party() -> None:
    """Silence known third-party warnings, log lines and MLflow's download bars, in the CLI only."""
    show = warnings.showwarning
    if getattr(show, "tastyrec_quiet", False):
        return

    def show_ours(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)) \
                and THIRD_PARTY.search(filename or ""):
            return
        show(message, category, filename, lineno, file, line)

    show_ours.tastyrec_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show_ours
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", QUIET_LOGGERS["mlflow"])  # MLflow sets it again on import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # "Downloading artifacts" bars


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
    quiet_third_party()
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


def _number(value) -> str:
    from tastyrec.metrics import finite

    return "-" if (v := finite(value)) is None else f"{v:.3f}"


def print_evaluation(evaluation) -> None:
    """The model, each baseline and the oracle side by side on the test window."""
    from tastyrec.evaluate import METRICS

    table = Table(title=f"test window: {evaluation.customers:,} of {evaluation.test_customers_total:,} "
                        f"test customers (seeded sample), {evaluation.rows:,} rows")
    table.add_column("method")
    for m in METRICS:
        table.add_column(m, justify="right")
    for name, metrics in evaluation.methods():
        table.add_row(name, *(_number(metrics.get(m)) for m in METRICS))
    out.print(table)
    if evaluation.fraction_of_oracle_ndcg10 is not None:
        out.print(f"NDCG@10 = {evaluation.fraction_of_oracle_ndcg10:.3f} x the oracle's")
    lift = evaluation.lift_over_best_baseline_ndcg10
    out.print(f"NDCG@10 = {_number(lift)} x the best baseline's ({evaluation.best_baseline or 'none'})")


def train_options(**given) -> TrainOptions:
    try:
        return TrainOptions(**given).resolved()
    except TrainError as e:  # a clear message, nothing launched
        fail(str(e))
        raise  # not reached: fail exits


EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation loss).")]
NprocOpt = Annotated[int, typer.Option(help="torchrun processes (DDP; gloo on CPU, nccl on GPUs).")]
SeedSamplesOpt = Annotated[int, typer.Option(help="Training rows for the seed's DLRM baseline (0 = skip it).")]


@app.command()
def train(ctx: typer.Context,
          epochs: EpochsOpt = TrainOptions.epochs, nproc: NprocOpt = TrainOptions.nproc,
          batch_size: Annotated[Optional[int], typer.Option(
              help="Global batch size (default: the model's, 4096 for dlrm, the seed's 256 for seed-dlrm).")] = None,
          lr: Annotated[Optional[float], typer.Option(
              help="Adam learning rate (default: the model's, 0.002 for dlrm, the seed's 0.001 for seed-dlrm).")] = None,
          max_samples: Annotated[Optional[int], typer.Option(help="Cap on training rows.")] = None,
          split: Annotated[SplitChoice, typer.Option(
              help="time (default) or random (the seed's; leaky, kept for comparison).")] = SplitChoice(TrainOptions.split),
          model: Annotated[ModelChoice, typer.Option(help="dlrm or the seed's seed-dlrm.")] = ModelChoice(TrainOptions.model),
          resume: Annotated[bool, typer.Option(help="Continue the last unfinished run.")] = False,
          seed_samples: SeedSamplesOpt = SEED_SAMPLES,
          as_json: JsonOpt = False) -> None:
    """Train with torchrun DDP, evaluate against baselines and the oracle, register in MLflow."""
    from tastyrec.jobs import train_job

    opts = train_options(epochs=epochs, nproc=nproc, batch_size=batch_size, lr=lr, max_samples=max_samples,
                         split=split.value, model=model.value, resume=resume, progress=not as_json)
    try:
        job = train_job(ctx.obj, opts, seed_samples=seed_samples)
    except (TrainError, ValueError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(job.to_dict(), default=str))
        return
    print_evaluation(job.evaluation)
    out.print(job.registry.decision)


@app.command()
def evaluate(ctx: typer.Context,
             version: Annotated[Optional[str], typer.Option(help="Model version (default: champion).")] = None,
             as_json: JsonOpt = False) -> None:
    """Evaluate a registered model against the baselines and the oracle on the test window."""
    from tastyrec.jobs import evaluate_job
    from tastyrec.registry import RegistryError

    try:
        evaluation = evaluate_job(ctx.obj, version or "champion")
    except RegistryError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(evaluation.to_dict()))
        return
    out.print(f"version {evaluation.version} of the registered model")
    print_evaluation(evaluation)


@app.command()
def recommend(as_json: JsonOpt = False) -> None:
    """Top-k menu items for customers."""
    not_built("recommend")


@app.command()
def pipeline(ctx: typer.Context,
             customers: Annotated[int, typer.Option(help="Loyalty customers to generate.")] = 20_000,
             seed: Annotated[int, typer.Option(help="Seed of the synthetic data set.")] = 42,
             epochs: EpochsOpt = TrainOptions.epochs, nproc: NprocOpt = TrainOptions.nproc,
             seed_samples: SeedSamplesOpt = SEED_SAMPLES,
             force: Annotated[bool, typer.Option(
                 help="Rebuild an existing warehouse (saved recommendations are kept).")] = False,
             as_json: JsonOpt = False) -> None:
    """setup -> features -> train -> evaluate -> register, in one command (an existing
    warehouse is reused unless --force)."""
    from tastyrec.features.build import FeaturesError
    from tastyrec.jobs import pipeline_job
    from tastyrec.warehouse.load import WarehouseError

    opts = train_options(epochs=epochs, nproc=nproc, progress=not as_json)
    try:
        with progress_bar(enabled=not as_json) as progress:
            result = pipeline_job(ctx.obj, customers, seed, opts, force=force, seed_samples=seed_samples,
                                  progress=progress)
    except (WarehouseError, FeaturesError, TrainError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
        return
    err.print(result.message)
    print_evaluation(result.job.evaluation)
    out.print(result.job.registry.decision)
    setup = f"setup {result.setup.seconds} s, " if result.setup else ""
    out.print(f"{setup}features {result.features.seconds} s, train + evaluate + register {result.job.seconds} s")


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
    """List registered versions, their test metrics (on the time split's test window) and aliases."""
    from tastyrec.registry import list_versions

    versions = list_versions(ctx.obj)
    if as_json:
        print(json.dumps(versions, default=str))
        return
    table = Table(title="tastyrec-dlrm")
    for column in ("version", "aliases", "model", "trained on", "ndcg@10", "recall@10", "auc", "created"):
        table.add_column(column)
    for v in versions:
        m = v["metrics"]
        split = v.get("training_split") or "?"
        table.add_row(str(v["version"]), ", ".join(v["aliases"]), v.get("model_kind") or "?",
                      f"{split} split" + (" (leaky)" if split == "random" else ""),
                      _number(m.get("ndcg@10")), _number(m.get("recall@10")), _number(m.get("auc")),
                      v["created"][:19].replace("T", " "))
    out.print(table)


@registry_app.command("promote")
def registry_promote(ctx: typer.Context, version: Annotated[int, typer.Argument()]) -> None:
    """Move the champion alias to VERSION by hand."""
    from tastyrec.registry import RegistryError, promote

    try:
        move = promote(ctx.obj, version)
    except RegistryError as e:
        fail(str(e))
    out.print(move.message)


@registry_app.command("rollback")
def registry_rollback(ctx: typer.Context) -> None:
    """Move the champion alias back to the version that held it before."""
    from tastyrec.registry import RegistryError, rollback

    try:
        move = rollback(ctx.obj)
    except RegistryError as e:
        fail(str(e))
    out.print(move.message)


if __name__ == "__main__":
    app()
