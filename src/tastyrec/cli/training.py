"""Commands that train, evaluate and govern models: train, evaluate, pipeline, registry."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from tastyrec.config import Workspace

from tastyrec.options import SEED_SAMPLES, TrainError, TrainOptions
from tastyrec.cli.base import (JsonOpt, ModelChoice, SplitChoice, StepDaysOpt, TrainWindowsOpt, WindowDaysOpt, _number,
                                app, err, fail, labelled, out, progress_bar, registry_app, warn)


def print_evaluation(evaluation) -> None:
    """The model, each baseline and the oracle side by side on the test window."""
    from tastyrec.evaluate import METRICS

    window = f" ({evaluation.window})" if evaluation.window else ""
    table = Table(title=f"test window{window}: {evaluation.customers:,} of {evaluation.test_customers_total:,} "
                        f"test customers (seeded sample), {evaluation.rows:,} rows")
    table.add_column("method")
    for m in METRICS:
        table.add_column(m, justify="right")
    best = evaluation.best_baseline
    for name, metrics in evaluation.methods():
        label = f"{name} (best baseline)" if name == best else name
        table.add_row(label, *(_number(metrics.get(m)) for m in METRICS))
    out.print(table)
    if evaluation.fraction_of_oracle_ndcg10 is not None:
        out.print(f"NDCG@10 = {evaluation.fraction_of_oracle_ndcg10:.3f} x the oracle's")
    lift = evaluation.lift_over_best_baseline_ndcg10
    out.print(f"NDCG@10 = {_number(lift)} x the best baseline's ({best or 'none'})")
    if lift is not None and lift <= 1:
        out.print(f"The model does not beat the {best} baseline on the test window: "
                  f"recommending with {best} would do at least as well.", style="bold")


def train_options(**given) -> TrainOptions:
    try:
        return TrainOptions(**given).resolved()
    except TrainError as e:  # a clear message, nothing launched
        fail(str(e))
        raise  # not reached: fail exits
EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation loss).")]
NprocOpt = Annotated[int, typer.Option(help="torchrun processes (DDP; gloo on CPU, nccl on GPUs).")]
SeedSamplesOpt = Annotated[int, typer.Option(help="Training rows for the seed's DLRM baseline (0 = skip it).")]
ReprobeOpt = Annotated[bool, typer.Option(
    help="--model auto: train each kind one epoch and compare again, even on data a decision was made on.")]


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
          reprobe: ReprobeOpt = False,
          train_windows: Annotated[Optional[int], typer.Option(
              help="Use the newest N training cutoffs that `tastyrec features` built (default: all).")] = None,
          seed_samples: SeedSamplesOpt = SEED_SAMPLES,
          nnodes: Annotated[int, typer.Option(
              help="Machines training together; run this command on each, with its --node-rank.")] = 1,
          node_rank: Annotated[int, typer.Option(
              help="This machine's rank: 0 prepares the data, evaluates and registers; the others follow.")] = 0,
          rdzv_endpoint: Annotated[Optional[str], typer.Option(
              help="HOST:PORT on node 0 for torchrun's c10d rendezvous (with --nnodes > 1).")] = None,
          as_json: JsonOpt = False) -> None:
    """Train with torchrun DDP, evaluate against baselines and the oracle, register in MLflow."""
    from tastyrec.experiment import follow
    from tastyrec.jobs import train_job

    opts = train_options(epochs=epochs, nproc=nproc, batch_size=batch_size, lr=lr, max_samples=max_samples,
                         split=split.value, model=model.value, resume=resume, reprobe=reprobe, train_windows=train_windows,
                         progress=not as_json, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    if node_rank > 0:
        err.print(f"node {node_rank} of {nnodes}: waiting for node 0 at {rdzv_endpoint}")
        try:
            follow(opts)
        except TrainError as e:
            fail(str(e))
        if as_json:
            print(json.dumps({"node_rank": node_rank, "nnodes": nnodes, "trained": True}))
        else:
            out.print(f"node {node_rank} of {nnodes}: trained with node 0, which evaluates and registers the model")
        return
    from tastyrec.features.build import FeaturesError
    from tastyrec.registry import RegistryError

    try:
        with progress_bar(enabled=not as_json) as progress:
            job = train_job(ctx.obj, opts, seed_samples=seed_samples, progress=progress)
    except (TrainError, ValueError, RegistryError, FeaturesError) as e:
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
    from tastyrec.features.build import FeaturesError
    from tastyrec.jobs import evaluate_job
    from tastyrec.registry import RegistryError

    try:
        evaluation = evaluate_job(ctx.obj, version or "champion")
    except (RegistryError, FeaturesError) as e:
        fail(str(e))
    if warning := evaluation.extra.get("warehouse_drift"):
        warn(warning)
    if as_json:
        print(json.dumps(evaluation.to_dict()))
        return
    out.print(f"version {evaluation.version} of the registered model")
    print_evaluation(evaluation)


@app.command()
def pipeline(ctx: typer.Context,
             customers: Annotated[int, typer.Option(help="Loyalty customers to generate.")] = 20_000,
             seed: Annotated[int, typer.Option(help="Seed of the synthetic data set.")] = 42,
             epochs: EpochsOpt = TrainOptions.epochs, nproc: NprocOpt = TrainOptions.nproc,
             seed_samples: SeedSamplesOpt = SEED_SAMPLES, reprobe: ReprobeOpt = False,
             window_days: WindowDaysOpt = None, train_windows: TrainWindowsOpt = None, step_days: StepDaysOpt = None,
             force: Annotated[bool, typer.Option(
                 help="Rebuild an existing warehouse (saved recommendations are kept).")] = False,
             as_json: JsonOpt = False) -> None:
    """setup -> features -> train -> evaluate -> register, in one command (an existing
    warehouse is reused unless --force)."""
    from tastyrec.features.build import FeaturesError
    from tastyrec.jobs import pipeline_job
    from tastyrec.registry import RegistryError
    from tastyrec.warehouse.load import WarehouseError

    opts = train_options(epochs=epochs, nproc=nproc, reprobe=reprobe, progress=not as_json)
    ws: Workspace = ctx.obj
    if not as_json:  # said first, as what follows is built on it (the test of jobs.pipeline_job)
        err.print(f"reusing the warehouse at {ws.warehouse} (--force rebuilds it from --customers/--seed)"
                  if ws.warehouse.exists() and not force else
                  f"building the warehouse at {ws.warehouse}: {customers:,} customers, seed {seed}")
    try:
        with progress_bar(enabled=not as_json) as progress:
            result = pipeline_job(ws, customers, seed, opts, force=force, seed_samples=seed_samples,
                                  progress=progress, windows={"window_days": window_days,
                                                              "train_windows": train_windows, "step_days": step_days})
    except (WarehouseError, FeaturesError, TrainError, RegistryError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
        return
    print_evaluation(result.job.evaluation)
    out.print(result.job.registry.decision)
    setup = f"setup {result.setup.seconds} s, " if result.setup else ""
    out.print(f"{setup}features {result.features.seconds} s, train + evaluate + register {result.job.seconds} s")


@registry_app.command("list")
def registry_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered versions, their test metrics (and the test window they were measured on) and aliases."""
    from tastyrec.registry import RegistryError, list_versions

    try:
        versions = list_versions(ctx.obj)
    except RegistryError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(versions, default=str))
        return
    table = Table(title="tastyrec-dlrm")
    for column in ("version", "aliases", "model", "trained on", "ndcg@10", "recall@10", "auc", "measured on", "created"):
        table.add_column(column)
    for v in versions:
        m = v["metrics"]
        split = v.get("training_split") or "?"
        table.add_row(str(v["version"]), ", ".join(v["aliases"]), v.get("model_kind") or "?",
                      f"{split} split" + (" (leaky)" if split == "random" else ""),
                      _number(m.get("ndcg@10")), _number(m.get("recall@10")), _number(m.get("auc")),
                      v.get("test_window") or "not recorded", v["created"][:19].replace("T", " "))
    out.print(table)


@registry_app.command("show")
def registry_show(ctx: typer.Context, version: Annotated[str, typer.Argument(help="Version number or alias.")],
                  as_json: JsonOpt = False) -> None:
    """A version's lineage: warehouse fingerprint, feature views, cutoffs, training sets, code."""
    from tastyrec.registry import RegistryError
    from tastyrec.registry.lineage import drift, show

    ws: Workspace = ctx.obj
    try:
        shown = show(ws, version)
        warning = drift(ws, shown["version"]) if ws.warehouse.exists() else None
    except RegistryError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(shown | {"warehouse_drift": warning}, default=str))
        return
    print_lineage(shown)
    if warning:
        warn(warning)


def print_lineage(v: dict) -> None:
    aliases = f" ({', '.join(v['aliases'])})" if v["aliases"] else ""
    out.print(labelled(f"tastyrec-dlrm version {v['version']}{aliases}:", "bold", f"{v.get('model_kind')}, "
                       f"{v.get('training_split')} split, registered {v['created'][:19].replace('T', ' ')} UTC, "
                       f"run {v['run_id']}"))
    out.print(f"gate: {v.get('gate_decision')}")
    m = v["metrics"]
    out.print("test metrics: " + ", ".join(f"{k} {_number(m.get(k))}" for k in ("ndcg@10", "recall@10", "new_ndcg@10", "auc"))
              + f" on {int(m.get('customers') or 0):,} customers")
    lineage = v["lineage"]
    if lineage is None:
        out.print("no lineage recorded (registered before tastyrec recorded it)")
        return
    wh = lineage["warehouse"]
    table = Table(title=f"warehouse fingerprint {wh['hash']}, last order {wh['last_order']}")
    for column in ("raw table", "rows", "checksum"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for name, t in wh["tables"].items():
        table.add_row(name, f"{t['rows']:,}", t["checksum"])
    out.print(table)
    features = lineage["features"]
    w = features["windows"]
    out.print("feature views: " + ", ".join(f"{name} {ver}" for name, ver in features["views"].items()))
    out.print(f"windows: {w['window_days']} days, {w['train_windows']} training cutoff(s) {w['step_days']} days apart; "
              f"online store {features['online_store']}")
    out.print("snapshot cutoffs: " + "; ".join(f"{split} {', '.join(days)}" for split, days in lineage["cutoffs"].items()))
    table = Table(title="datasets (MLflow dataset inputs of the run)")
    for column in ("context", "name", "rows", "digest", "source"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for d in v["dataset_inputs"]:
        table.add_row(d["context"], d["name"], f"{d['rows']:,}" if d["rows"] is not None else "?", d["digest"], d["source"])
    out.print(table)
    code = lineage["code"]
    commit = code["git_commit"] or "no git checkout"
    out.print(f"code: tastyrec {code['tastyrec']}, commit {commit}{' (uncommitted changes)' if code['git_dirty'] else ''}")


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
