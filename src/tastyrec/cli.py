"""The `tastyrec` command line: thin Typer commands that call the stage functions and print."""

from __future__ import annotations

import json
import os
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
os.environ["DO_NOT_TRACK"] = "true"

app = typer.Typer(help="tastyrec: menu-item recommendations for Tasty Bytes loyalty customers.",
                  no_args_is_help=True, add_completion=False)
registry_app = typer.Typer(help="List model versions and move the champion alias.")
app.add_typer(registry_app, name="registry")
err = Console(stderr=True)
out = Console()

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


@app.command()
def train(as_json: JsonOpt = False) -> None:
    """Train the DLRM with torchrun DDP, evaluate and register it."""
    not_built("train")


@app.command()
def evaluate(as_json: JsonOpt = False) -> None:
    """Evaluate a registered model against baselines and the oracle on the test window."""
    not_built("evaluate")


@app.command()
def recommend(as_json: JsonOpt = False) -> None:
    """Top-k menu items for customers."""
    not_built("recommend")


@app.command()
def pipeline(as_json: JsonOpt = False) -> None:
    """setup -> features -> train -> evaluate -> register, in one command."""
    not_built("pipeline")


@app.command()
def serve() -> None:
    """Start the REST inference service."""
    not_built("serve")


@app.command("app")
def streamlit_app() -> None:
    """Start the Streamlit app for marketing people."""
    not_built("app")


@registry_app.command("list")
def registry_list() -> None:
    """List registered versions, their metrics and aliases."""
    not_built("registry list")


if __name__ == "__main__":
    app()
