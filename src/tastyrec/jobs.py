"""The jobs the CLI runs, stage after stage:

    setup -> features -> training set -> train -> evaluate -> register

`pipeline_job` runs them all, `train_job` the last four, `evaluate_job` scores a registered
version again. Every version, however it was trained, is evaluated and gated on the same rows:
the time split's test window, with the same baselines and oracle.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow.parquet as pq

from tastyrec.config import Progress, Workspace
from tastyrec.evaluate import Evaluation, evaluate_predictors
from tastyrec.experiment import TrainOutcome, train_best, train_model
from tastyrec.features.build import FeaturesResult, build_features, built_features, current_features
from tastyrec.features.training import TrainingSet, build_training_set, is_current
from tastyrec.model import AUTO_KINDS
from tastyrec.options import SEED_EPOCHS, SEED_SAMPLES, TrainOptions
from tastyrec.predictor import Predictor
from tastyrec.warehouse.load import SetupResult, setup_synthetic

EVALUATION_SPLIT = "time"  # the one yardstick: the final window after the test cutoff


@dataclass
class JobResult:
    """What `tastyrec train` reports: the run, the evaluation and the registry's decision."""

    train: TrainOutcome
    evaluation: Evaluation
    registry: Any  # registry.RegisterResult
    seed_baseline: TrainOutcome | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"train": asdict(self.train), "evaluation": self.evaluation.to_dict(),
                "registry": self.registry.to_dict(),
                "seed_baseline": asdict(self.seed_baseline) if self.seed_baseline else None,
                "seconds": self.seconds}


@dataclass
class PipelineResult:
    setup: SetupResult | None  # None when an existing warehouse was reused
    features: FeaturesResult
    job: JobResult
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"setup": asdict(self.setup) if self.setup else None, "reused_warehouse": self.setup is None,
                "features": asdict(self.features), **self.job.to_dict()}


def test_window(ws: Workspace) -> str:
    """The time split's test set of the current features: reused when it was built from them,
    else rebuilt. Features computed from another warehouse than the one of now are refused
    (FeaturesError): their rows would be scored against the labels and truth of other data."""
    current_features(ws)
    path = ws.home / "datasets" / EVALUATION_SPLIT / "test.parquet"
    if path.exists() and is_current(ws, EVALUATION_SPLIT):
        return str(path)
    return build_training_set(ws, EVALUATION_SPLIT).paths["test"]


def window_label(ws: Workspace) -> str:
    """Which rows an evaluation scored, in words: the test window of the current features and the
    warehouse they came from. Two figures compare only when their labels are equal."""
    built = current_features(ws)
    return (f"{built.cutoffs['test'][0]} + {built.windows['window_days']} days, "
            f"warehouse {built.warehouse[:8]}")


def _champion(ws: Workspace) -> tuple[int, Predictor] | None:
    """The registered champion, to be scored on the new version's rows (None: no champion yet,
    or one that cannot be loaded any more; the gate then says so)."""
    from tastyrec.registry import RegistryError, load_predictor

    try:
        predictor, version = load_predictor(ws, "champion")
    except RegistryError:  # no model or no champion yet; files that cannot be read
        return None
    return version, predictor


def train_job(ws: Workspace, opts: TrainOptions, seed_samples: int = SEED_SAMPLES,
              seed_epochs: int = SEED_EPOCHS, progress: Progress | None = None) -> JobResult:
    """Train the model (and the seed's DLRM on a capped sample, as a baseline), evaluate both
    against the baselines and the oracle on the test window, log to MLflow and register."""
    from tastyrec.registry import log_and_register
    from tastyrec.registry.lineage import collect
    from tastyrec.registry.tracking import check_server

    started = time.perf_counter()
    opts = opts.resolved()  # bad options fail here, before anything is built
    check_server()  # a tracking server that is down fails here, not after training
    outcome, selection = _train_chosen(ws, opts, progress)
    opts = TrainOptions(**outcome.options)  # the kind kept, with its batch size and lr
    training_set = TrainingSet(**outcome.training_set)
    predictors = {f"tastyrec {opts.model}": Predictor.from_dir(outcome.model_dir)}
    seed = None
    if opts.model != "seed-dlrm" and seed_samples:
        # The seed's model is slow by design (a 33,024-wide top MLP): it trains on a capped
        # sample, with the seed notebook's own batch size and learning rate (its kind's defaults).
        seed_opts = replace(opts, model="seed-dlrm", max_samples=seed_samples, epochs=seed_epochs, nproc=1,
                            nnodes=1, rdzv_endpoint=None, resume=False, batch_size=None, lr=None)
        seed = train_model(ws, seed_opts, training_set, progress)
        predictors["seed-dlrm"] = Predictor.from_dir(seed.model_dir)
    test = training_set.paths["test"] if opts.split == EVALUATION_SPLIT else test_window(ws)
    # the champion is scored now, on these rows: a figure stored with it may come from another window
    evaluation = evaluate_predictors(ws, test, predictors, progress=progress, champion=_champion(ws),
                                     window=window_label(ws))
    evaluation.extra["training_split"] = opts.split
    params = {k: v for k, v in asdict(opts).items() if k not in ("progress", "resume", "reprobe")}
    windows = built_features(ws).windows  # the time windows the model was trained with
    params |= {**windows, **{f"val_loss_{kind}": loss for kind, loss in selection.items()}, "train_cutoffs": ",".join(training_set.cutoffs["train"]),
               "train_rows": training_set.rows["train"], "seed_baseline_samples": seed_samples,
               "world_size": outcome.result.get("world_size"), "device": outcome.result.get("device"),
               "explore_head": explore_label(outcome.result.get("explore_head")),
               "model_choice": outcome.result.get("model_choice", "given")}
    lineage = collect(ws, training_set, test)
    registered = log_and_register(
        ws, outcome.model_dir, params=params, history=outcome.result.get("history", []), evaluation=evaluation,
        input_example=pq.ParquetFile(test).read_row_group(0).slice(0, 5).to_pandas(), seed_model_dir=seed.model_dir if seed else None,
        split=opts.split, lineage=lineage, description=f"tastyrec {opts.model}, {opts.split} split, "
                                                       f"{training_set.rows['train']:,} training rows")
    if progress:
        progress("register", 1, 1)
    return JobResult(train=outcome, evaluation=evaluation, registry=registered, seed_baseline=seed,
                     seconds=round(time.perf_counter() - started, 2))


def explore_label(explore: dict | None) -> str:
    """What ranks cross-sell, in words: the explore head kept (on which inputs) or the main head."""
    if explore is None:
        return "main head (the model has no explore head)"
    figures = explore.get("validation_new_ndcg@10", {})
    if not explore["kept"]:
        return f"main head (validation new-item NDCG@10 {figures.get('main', 0):.4f}, no explore head better)"
    return (f"explore head on {explore['inputs']} (validation new-item NDCG@10 {figures['explore']:.4f} "
            f"against the main head's {figures['main']:.4f})")


def _train_chosen(ws: Workspace, opts: TrainOptions,
                  progress: Progress | None = None) -> tuple[TrainOutcome, dict[str, float]]:
    """Train opts.model; with "auto", the AUTO_KINDS that does best on the validation window
    after one epoch (on data whose items change between the training windows and now, the item
    embeddings of "dlrm" fit what no longer sells, and "dlrm-dense-items" wins). Returns the
    kept run and {kind: validation loss} of the kinds compared."""
    if opts.model != "auto":
        return train_model(ws, opts, progress=progress), {}
    return train_best(ws, opts, AUTO_KINDS, progress=progress)


def evaluate_job(ws: Workspace, ref: str | int = "champion", rows: Workspace | None = None,
                 progress: Progress | None = None) -> Evaluation:
    """Evaluate a registered version (and the seed baseline trained with it) on the test window.

    rows: the workspace whose current features give the test window (default: ws itself);
    `tastyrec monitor` scores each later window so, from features built aside (monitor.py)."""
    from tastyrec.registry import load_predictor, load_seed_baseline
    from tastyrec.registry.lineage import drift

    rows = rows or ws
    predictor, version = load_predictor(ws, ref)
    predictors = {f"version {version} ({predictor.kind})": predictor}
    if (seed := load_seed_baseline(ws, version)) is not None:
        predictors["seed-dlrm"] = seed
    evaluation = evaluate_predictors(rows, test_window(rows), predictors, window=window_label(rows),
                                     progress=progress)
    evaluation.version = version
    if warning := drift(ws, version):  # the scores describe other data than the model was trained on
        evaluation.extra["warehouse_drift"] = warning
    return evaluation


def pipeline_job(ws: Workspace, customers: int, seed: int, opts: TrainOptions, force: bool = False,
                 seed_samples: int = SEED_SAMPLES, progress: Progress | None = None,
                 windows: dict[str, int | None] | None = None) -> PipelineResult:
    """setup (or reuse the existing warehouse unless force) -> features -> train_job.

    windows: window_days / train_windows / step_days for `build_features` (None: from the data)."""
    opts = opts.resolved()
    if ws.warehouse.exists() and not force:
        setup = None
        message = f"reusing the warehouse at {ws.warehouse} (--force rebuilds it from --customers/--seed)"
    else:
        setup = setup_synthetic(ws, customers=customers, seed=seed, force=force, progress=progress)
        message = f"built the warehouse at {ws.warehouse}: {customers:,} customers, seed {seed}"
    features = build_features(ws, progress=progress, **(windows or {}))
    job = train_job(ws, opts, seed_samples=seed_samples, progress=progress)
    return PipelineResult(setup=setup, features=features, job=job, message=message)
