"""One training job end to end: training set -> preprocessing -> torchrun DDP -> model directory.

`train_model` is what `tastyrec train` and `tastyrec pipeline` call; the DDP loop itself lives
in train.py and runs under torchrun (or in-process for one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tastyrec.config import Workspace
from tastyrec.features.training import TrainingSet, build_training_set
from tastyrec.model import model_config
from tastyrec.predictor import SCORE_BATCH, Predictor
from tastyrec.preprocess import Preprocessor
from tastyrec.train import MODEL_FILE, TrainConfig, train

FEATURE_SET = {"dlrm": "full", "seed-dlrm": "seed"}


@dataclass
class TrainOptions:
    """What `tastyrec train` takes (see its --help)."""

    epochs: int = 4
    nproc: int = 1
    batch_size: int = 4096
    lr: float = 2e-3
    max_samples: int | None = None
    split: str = "time"
    model: str = "dlrm"
    seed: int = 0
    patience: int = 2
    train_windows: int = 2
    resume: bool = False
    progress: bool = True


@dataclass
class TrainOutcome:
    run_dir: str
    model_dir: str
    options: dict
    training_set: dict
    result: dict = field(default_factory=dict)  # TrainResult.to_dict() of the DDP run
    seconds: float = 0.0


class TrainError(Exception):
    """Training could not run (missing features, a failed worker, bad options)."""


def _run_dir(ws: Workspace, opts: TrainOptions) -> Path:
    """A new run folder, or with resume the newest unfinished one of the same model and split."""
    suffix = f"{opts.model}-{opts.split}"
    if opts.resume and ws.checkpoints.exists():
        unfinished = sorted(p for p in ws.checkpoints.glob(f"*-{suffix}")
                            if (p / "checkpoint.pt").exists() and not (p / "model").exists())
        if unfinished:
            return unfinished[-1]
    return ws.checkpoints / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"


def _sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    return frame if not n or n >= len(frame) else frame.sample(n=n, random_state=seed).reset_index(drop=True)


def train_model(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None = None) -> TrainOutcome:
    """Fit preprocessing on the training rows, train with torchrun, write the model directory."""
    if opts.model not in FEATURE_SET:
        raise TrainError(f"unknown model {opts.model!r}; choose from {sorted(FEATURE_SET)}")
    if opts.nproc < 1 or opts.epochs < 1 or opts.batch_size < opts.nproc:
        raise TrainError("--nproc and --epochs must be at least 1, and --batch-size at least --nproc")
    if not (ws.feature_repo / "summary.json").exists():
        raise TrainError(f"no features in {ws.feature_repo}; run `tastyrec features` first")
    started = time.perf_counter()
    training_set = training_set or build_training_set(ws, opts.split, seed=opts.seed,
                                                      train_windows=opts.train_windows)
    run_dir = _run_dir(ws, opts)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Arrow-backed columns: the history bags stay Arrow lists instead of millions of Python lists
    train_rows = _sample(pd.read_parquet(training_set.paths["train"], dtype_backend="pyarrow"),
                         opts.max_samples, opts.seed)
    val_rows = _sample(pd.read_parquet(training_set.paths["val"], dtype_backend="pyarrow"),
                       opts.max_samples, opts.seed)
    preprocessor = Preprocessor(FEATURE_SET[opts.model]).fit(train_rows)  # training rows only
    preprocessor.transform(train_rows).save(run_dir / "train.pt")
    preprocessor.transform(val_rows).save(run_dir / "val.pt")
    config = TrainConfig(
        train_path=str(run_dir / "train.pt"), val_path=str(run_dir / "val.pt"), checkpoint_dir=str(run_dir),
        model_kind=opts.model,
        model_config=model_config(opts.model, preprocessor.cardinalities, preprocessor.bag_sizes,
                                  len(preprocessor.dense)),
        epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, patience=opts.patience,
        output_path=str(run_dir / "result.json"), progress=opts.progress,
        eval_batch_size=SCORE_BATCH[opts.model])
    config_path = run_dir / "train_config.json"
    config_path.write_text(json.dumps(asdict(config), indent=2))
    if opts.nproc == 1:
        train(config)
    else:
        _torchrun(config_path, opts.nproc)
    model_dir = Predictor.write_dir(run_dir / "model", preprocessor, run_dir / MODEL_FILE)
    for tensors in ("train.pt", "val.pt"):  # rebuilt from the training set when needed
        (run_dir / tensors).unlink(missing_ok=True)
    return TrainOutcome(run_dir=str(run_dir), model_dir=str(model_dir), options=asdict(opts),
                        training_set=asdict(training_set),
                        result=json.loads((run_dir / "result.json").read_text()),
                        seconds=round(time.perf_counter() - started, 2))


def _torchrun(config_path: Path, nproc: int) -> None:
    """torchrun --standalone --nproc-per-node N -m tastyrec.train --config config_path."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tastyrec.train", "--config", str(config_path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    # workers print progress: send it to the real stderr, stdout is for --json
    done = subprocess.run(cmd, env=env, stdout=sys.__stderr__)
    if done.returncode != 0:
        raise TrainError(f"torchrun exited with status {done.returncode}; start again with --resume "
                         "to continue from the last checkpoint")


@dataclass
class JobResult:
    """What `tastyrec train` reports: the run, the evaluation and the registry's decision."""

    train: dict
    evaluation: dict
    registry: dict
    seed_baseline: dict | None
    seconds: float


def train_evaluate_register(ws: Workspace, opts: TrainOptions, seed_samples: int = 10_000,
                            seed_epochs: int = 2) -> JobResult:
    """Train the model (and the seed's DLRM on a capped sample, as a baseline), evaluate both
    against the baselines and the oracle on the test window, log to MLflow and register."""
    from tastyrec.evaluate import evaluate_predictors
    from tastyrec.registry import log_and_register

    started = time.perf_counter()
    outcome = train_model(ws, opts)
    training_set = TrainingSet(**outcome.training_set)
    predictors = {opts.model: Predictor.from_dir(outcome.model_dir)}
    seed = None
    if opts.model == "dlrm" and seed_samples:
        # The seed's model is slow by design (a 33,024-wide top MLP): it trains on a capped sample,
        # with the seed notebook's own batch size and learning rate.
        seed_opts = TrainOptions(**{**asdict(opts), "model": "seed-dlrm", "max_samples": seed_samples,
                                    "epochs": seed_epochs, "nproc": 1, "resume": False,
                                    "batch_size": 256, "lr": 0.001})
        seed = train_model(ws, seed_opts, training_set)
        predictors["seed-dlrm"] = Predictor.from_dir(seed.model_dir)
    evaluation = evaluate_predictors(ws, training_set.paths["test"], predictors)
    example = pd.read_parquet(training_set.paths["test"]).head(5)
    params = {k: v for k, v in asdict(opts).items() if k not in ("progress", "resume")}
    params |= {"train_rows": training_set.rows["train"], "seed_baseline_samples": seed_samples,
               "world_size": outcome.result.get("world_size"), "device": outcome.result.get("device")}
    registered = log_and_register(
        ws, outcome.model_dir, params=params, history=outcome.result.get("history", []), evaluation=evaluation,
        input_example=example, description=f"tastyrec {opts.model}, {opts.split} split, "
                                            f"{training_set.rows['train']:,} training rows")
    return JobResult(train=asdict(outcome), evaluation=evaluation, registry=asdict(registered),
                     seed_baseline=asdict(seed) if seed else None,
                     seconds=round(time.perf_counter() - started, 2))
