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


def print_recommendations(result) -> None:
    """One row per customer: where they are, what they bought, what to offer them."""
    model = result.model
    table = Table(title=f"top {result.top_k} for {len(result.customers):,} customers "
                        f"(tastyrec-dlrm version {model['version']}{', ' + model['alias'] if model['alias'] else ''})")
    for column in ("customer", "city", "purchase history (orders, last)", "recommendations (score)"):
        table.add_column(column)
    for c in result.customers:
        history = ", ".join(f"{h['menu_item_name']} ({h['orders']}, {h['last_purchase']})" for h in c.history[:4])
        more = f" +{len(c.history) - 4} more" if len(c.history) > 4 else ""
        recs = "\n".join(f"{r['rank']}. {r['menu_item_name']} - {r['truck_brand_name']}, "
                         f"${r['sale_price_usd']:.2f} ({r['score']:.3f})" for r in c.recommendations)
        table.add_row(str(c.customer_id), f"{c.city}, {c.country}", (history + more) or "-", recs)
    out.print(table)


@app.command()
def recommend(ctx: typer.Context,
              customer: Annotated[Optional[list[int]], typer.Option(help="Customer id (repeat for several).")] = None,
              country: Annotated[Optional[list[str]], typer.Option(help="Customers of this country (repeatable).")] = None,
              city: Annotated[Optional[list[str]], typer.Option(help="Customers of this city (repeatable).")] = None,
              brand: Annotated[Optional[list[str]], typer.Option(help="Only items of this truck brand (repeatable).")] = None,
              trucks_not_visited: Annotated[bool, typer.Option(
                  "--trucks-not-visited", help="Only items of brands the customer never bought from.")] = False,
              items_not_ordered: Annotated[bool, typer.Option(
                  "--items-not-ordered", help="Only items the customer never bought.")] = False,
              top_k: Annotated[int, typer.Option(help="Items per customer (1-50).")] = 3,
              version: Annotated[Optional[str], typer.Option(help="Model version or alias (default: champion).")] = None,
              save: Annotated[Optional[str], typer.Option(help="Save the result as a campaign with this name.")] = None,
              as_json: JsonOpt = False) -> None:
    """Top-k menu items for customers: by id, or by country / city / brand filters."""
    from tastyrec.campaigns import save as save_campaign
    from tastyrec.recommend import Engine, Filters, RecommendError

    if customer and (country or city):
        fail("give --customer ids or --country/--city filters, not both")
    filters = Filters(tuple(country or ()), tuple(city or ()), tuple(brand or ()), trucks_not_visited,
                      items_not_ordered)
    try:
        engine = Engine(ctx.obj, version or "champion")
        with err.status("scoring..."):
            result = engine.recommend(customer_ids=list(customer) if customer else None, filters=filters, top_k=top_k)
        campaign = save_campaign(ctx.obj, result, save) if save and result.customers else None
    except RecommendError as e:
        fail(str(e))
    if result.unknown_customers:
        err.print(f"[yellow]unknown customer ids:[/yellow] {', '.join(map(str, result.unknown_customers))}")
    if as_json:
        print(json.dumps(result.to_dict() | {"campaign": campaign.to_dict() if campaign else None}, default=str))
    elif result.customers:
        print_recommendations(result)
    if result.message:
        err.print(result.message)
    if campaign and not as_json:
        out.print(f"saved campaign {campaign.name!r} as run {campaign.run_id}: {campaign.rows:,} rows, "
                  f"{', '.join(campaign.files)}")
    if customer and not result.selected:
        raise typer.Exit(1)


@app.command()
def campaigns(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List saved campaigns (name, time, filters, customers, model version)."""
    from tastyrec.campaigns import list_campaigns

    saved = list_campaigns(ctx.obj)
    if as_json:
        print(json.dumps([c.to_dict() for c in saved]))
        return
    table = Table(title="saved campaigns")
    for column in ("run id", "name", "created", "filters", "customers", "model version"):
        table.add_column(column)
    for c in saved:
        filters = ", ".join(f"{k}={v}" for k, v in c.filters.items() if v)
        table.add_row(c.run_id, c.name, c.created_at.replace("T", " "), filters or "-", f"{c.customers:,}",
                      str(c.model_version))
    out.print(table)


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
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="Address to listen on (loopback unless a token is set).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, help="Worker processes (each opens the model once).")] = 1,
          version: Annotated[Optional[str], typer.Option(help="Model version or alias (default: champion).")] = None,
          ) -> None:
    """Start the REST inference service (FastAPI + uvicorn; OpenAPI docs at /docs). Ctrl-C stops it.

    Set TASTYREC_API_TOKEN to require `Authorization: Bearer <token>`; it is required off loopback."""
    import tempfile

    import uvicorn

    from tastyrec import service
    from tastyrec.recommend import Engine, RecommendError

    ws: Workspace = ctx.obj
    token = os.environ.get(service.TOKEN_ENV) or None
    if not token and not service.is_loopback(host):
        fail(f"refusing to serve on {host} without a token: set {service.TOKEN_ENV} (clients then send "
             "`Authorization: Bearer <token>`), or listen on 127.0.0.1")
    ref = version or "champion"
    try:
        engine = Engine(ws, ref)  # errors (no model, no features) before listening, in plain words
    except RecommendError as e:
        fail(str(e))
    info = engine.model_info
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    out.print(f"serving tastyrec-dlrm version {info['version']}{' (' + info['alias'] + ')' if info['alias'] else ''} "
              f"at {url} (docs {url}/docs), {workers} worker{'s' if workers > 1 else ''}"
              f"{', bearer token required' if token else ''}; Ctrl-C stops it")
    if workers == 1:
        uvicorn.run(service.create_app(ws, ref, token, engine=engine), host=host, port=port)
        return
    del engine  # each worker process opens its own, from the environment set here
    with tempfile.TemporaryDirectory(prefix="tastyrec-serve-") as tmp:
        os.environ.update({service.HOME_ENV: str(ws.home), service.REF_ENV: ref,
                           service.STAMP_ENV: str(Path(tmp, "reload"))})
        uvicorn.run("tastyrec.service:app_from_env", factory=True, host=host, port=port, workers=workers)


@app.command("app")
def streamlit_app(ctx: typer.Context,
                  port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
                  host: Annotated[str, typer.Option(help="Address to listen on (the app has no login).")] = "127.0.0.1",
                  service: Annotated[Optional[str], typer.Option(
                      help="Get recommendations from this `tastyrec serve` URL instead of an in-process engine "
                           "(its token from TASTYREC_API_TOKEN).")] = None) -> None:
    """Start the Streamlit app for marketing people (streamlit run, headless, no usage statistics).
    Ctrl-C stops it."""
    from tastyrec.app import command
    from tastyrec.registry import RegistryError, champion_version

    ws: Workspace = ctx.obj
    if not ws.warehouse.exists():
        fail(f"no warehouse in {ws.home}: run `tastyrec pipeline` first")
    if not service:
        try:
            version = champion_version(ws)
        except RegistryError as e:
            fail(str(e))
        if version is None:
            fail(f"no champion model in {ws.home}: run `tastyrec pipeline` (or `tastyrec train`) first")
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    out.print(f"app at {url} ({'recommendations from ' + service if service else 'engine in-process'}, "
              f"workspace {ws.home}); Ctrl-C stops it")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] the app has no login: anyone who can reach {url} can use it")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = command(ws.home, port, host, service)
    os.execv(argv[0], argv)  # streamlit takes over this process: Ctrl-C and kill reach it directly


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
