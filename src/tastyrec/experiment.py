"""One training run: training set -> preprocessing -> torchrun DDP -> model directory.

`train_model` is what the train and pipeline jobs (jobs.py) call; the DDP loop itself lives in
train.py and runs under torchrun (or in-process for one process). Each run folder under
<home>/checkpoints records its model kind and split in run.json, which is how `--resume`
finds the newest unfinished run of the same kind and split.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from tastyrec.columns import CUSTOMER_ID, LABEL, TIMESTAMP
from tastyrec.config import Workspace
from tastyrec.features.build import FeaturesError
from tastyrec.features.training import TrainingSet, build_training_set
from tastyrec.model import AUTO_KINDS, MODEL_FILE, MODEL_KINDS, model_config
from tastyrec.options import TrainError, TrainOptions
from tastyrec.predictor import Predictor
from tastyrec.preprocess import Batch, Preprocessor
from tastyrec.train import CHECKPOINT_FILE, TrainConfig, train

RUN_FILE = "run.json"  # {"model": kind, "split": split} of a run folder


@dataclass
class TrainOutcome:
    run_dir: str
    model_dir: str
    options: dict
    training_set: dict
    result: dict = field(default_factory=dict)  # TrainResult.to_dict() of the DDP run
    seconds: float = 0.0


def _recorded(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _unfinished(ws: Workspace, opts: TrainOptions) -> list[Path]:
    """Run folders of opts' model kind and split with a checkpoint and no model yet, oldest first."""
    mine = {"model": opts.model, "split": opts.split}
    if not ws.checkpoints.exists():
        return []
    return sorted(p for p in ws.checkpoints.iterdir()
                  if (p / CHECKPOINT_FILE).exists() and not (p / "model").exists() and _recorded(p) == mine)


def _run_dir(ws: Workspace, opts: TrainOptions) -> Path:
    """A new run folder, or with resume the newest unfinished one of the same model and split."""
    if opts.resume and (unfinished := _unfinished(ws, opts)):
        return unfinished[-1]
    run_dir = ws.checkpoints / f"{time.strftime('%Y%m%d-%H%M%S')}-{opts.model}-{opts.split}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps({"model": opts.model, "split": opts.split}))
    return run_dir


def _sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    return frame if not n or n >= len(frame) else frame.sample(n=n, random_state=seed).reset_index(drop=True)


def _buyers(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (customer, cutoff) pairs with at least one purchase in the label window."""
    bought = frame.groupby([CUSTOMER_ID, TIMESTAMP], sort=False, observed=True)[LABEL].transform("max")
    return frame[bought.to_numpy(dtype=float) > 0].reset_index(drop=True)


@dataclass
class _Run:
    """A prepared run: its folder, its training config (tensors written) and preprocessor."""

    opts: TrainOptions
    run_dir: Path
    config: TrainConfig
    preprocessor: Preprocessor


def _training_set(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None) -> TrainingSet:
    try:
        return training_set or build_training_set(ws, opts.split, seed=opts.seed, train_windows=opts.train_windows)
    except FeaturesError as e:
        raise TrainError(str(e)) from None


def _read_rows(training_set: TrainingSet, opts: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows (capped by --max-samples)."""
    # Arrow-backed columns: the history bags stay Arrow lists instead of millions of Python lists
    return tuple(_sample(pd.read_parquet(training_set.paths[split], dtype_backend="pyarrow"), opts.max_samples,
                         opts.seed) for split in ("train", "val"))


@dataclass
class _Prepared:
    """A fitted preprocessor and the training and validation tensors it made for a model kind."""

    kind: str
    preprocessor: Preprocessor
    train: Batch
    val: Batch

    @classmethod
    def of(cls, kind: str, rows: tuple[pd.DataFrame, pd.DataFrame]) -> _Prepared:
        """Fit `kind`'s preprocessing on the training rows only, transform both splits."""
        spec = MODEL_KINDS[kind]
        train_rows, val_rows = map(_buyers, rows) if spec.buyers_only else rows
        preprocessor = Preprocessor(spec.feature_set).fit(train_rows)
        return cls(kind, preprocessor, preprocessor.transform(train_rows), preprocessor.transform(val_rows))

    def narrowed(self, kind: str) -> _Prepared:
        """The same for a kind that reads fewer sparse columns of the same rows (see
        Preprocessor.narrowed): one fit and transform serves every kind of `--model auto`."""
        if MODEL_KINDS[kind].buyers_only != MODEL_KINDS[self.kind].buyers_only:
            raise ValueError(f"{kind!r} trains on other rows than {self.kind!r}")
        preprocessor, (train, val) = self.preprocessor.narrowed(MODEL_KINDS[kind].feature_set, self.train, self.val)
        return _Prepared(kind, preprocessor, train, val)


def _prepare(ws: Workspace, opts: TrainOptions, rows: tuple[pd.DataFrame, pd.DataFrame],
             prepared: _Prepared | None = None) -> _Run:
    """Write the tensors (fitted on the training rows unless `prepared`) and the training config."""
    run_dir = _run_dir(ws, opts)
    kind = MODEL_KINDS[opts.model]
    prepared = prepared or _Prepared.of(opts.model, rows)
    preprocessor = prepared.preprocessor
    prepared.train.save(run_dir / "train.pt")
    prepared.val.save(run_dir / "val.pt")
    config = TrainConfig(
        train_path=str(run_dir / "train.pt"), val_path=str(run_dir / "val.pt"), checkpoint_dir=str(run_dir),
        model_kind=opts.model,
        model_config=model_config(opts.model, preprocessor.cardinalities, preprocessor.bag_sizes,
                                  len(preprocessor.dense)),
        epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, patience=opts.patience,
        output_path=str(run_dir / "result.json"), progress=opts.progress, eval_batch_size=kind.score_batch)
    return _Run(opts, run_dir, config, preprocessor)


def _fit(run: _Run, epochs: int) -> dict:
    """Train up to `epochs` (continuing from the run's checkpoint, if any); the result dict."""
    config = replace(run.config, epochs=epochs)
    config_path = run.run_dir / "train_config.json"
    config.to_json(config_path)
    if run.opts.nproc == 1:
        train(config)
    else:
        _torchrun(config_path, run.opts.nproc, run.run_dir)
    return json.loads((run.run_dir / "result.json").read_text())


def _finish(run: _Run, training_set: TrainingSet, result: dict, started: float) -> TrainOutcome:
    """The model directory (preprocessing + model file); the tensors are deleted (rebuilt when needed)."""
    model_dir = Predictor.write_dir(run.run_dir / "model", run.preprocessor, run.run_dir / MODEL_FILE)
    for tensors in ("train.pt", "val.pt"):
        (run.run_dir / tensors).unlink(missing_ok=True)
    return TrainOutcome(run_dir=str(run.run_dir), model_dir=str(model_dir), options=asdict(run.opts),
                        training_set=asdict(training_set), result=result,
                        seconds=round(time.perf_counter() - started, 2))


def train_model(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None = None) -> TrainOutcome:
    """Fit preprocessing on the training rows, train with torchrun, write the model directory.
    With --model auto, the AUTO_KINDS that does best on validation (`train_best`)."""
    if opts.model == "auto":
        return train_best(ws, opts, AUTO_KINDS, training_set)[0]
    opts = opts.resolved()
    started = time.perf_counter()
    training_set = _training_set(ws, opts, training_set)
    run = _prepare(ws, opts, _read_rows(training_set, opts))
    return _finish(run, training_set, _fit(run, opts.epochs), started)


def train_best(ws: Workspace, opts: TrainOptions, kinds: tuple[str, ...],
               training_set: TrainingSet | None = None) -> tuple[TrainOutcome, dict[str, float]]:
    """Prepare every model kind on the same rows, train each for one epoch and continue only the
    one with the lowest validation loss (the validation window is the judge). Returns the kept
    run and {kind: validation loss after one epoch}. With --resume, an unfinished run of one of
    the kinds (the one chosen before the run was killed) is continued instead."""
    if opts.resume:
        for kind in kinds:
            if _unfinished(ws, replace(opts, model=kind)):
                return train_model(ws, replace(opts, model=kind), training_set), {}
    opts = opts.resolved()
    started = time.perf_counter()
    training_set = _training_set(ws, opts, training_set)
    rows = _read_rows(training_set, opts)
    full = _Prepared.of(kinds[0], rows)  # the first kind reads every column the others read
    runs = {kind: _prepare(ws, replace(opts, model=kind).resolved(), rows,
                           full if kind == kinds[0] else full.narrowed(kind)) for kind in kinds}
    del full, rows
    losses = {kind: float(_fit(run, 1)["best_val_loss"]) for kind, run in runs.items()}
    best = min(losses, key=losses.__getitem__)
    for kind, run in runs.items():
        if kind != best:
            shutil.rmtree(run.run_dir)  # a one-epoch probe, not a model anyone will use
    return _finish(runs[best], training_set, _fit(runs[best], opts.epochs), started), losses


def _torchrun(config_path: Path, nproc: int, run_dir: Path) -> None:
    """torchrun --standalone --nproc-per-node N -m tastyrec.train --config config_path."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tastyrec.train", "--config", str(config_path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    # workers print progress: send it to the real stderr, stdout is for --json
    done = subprocess.run(cmd, env=env, stdout=sys.__stderr__)
    if done.returncode != 0:
        advice = ("; start again with --resume to continue from the last completed epoch"
                  if (run_dir / CHECKPOINT_FILE).exists() else " before its first epoch ended (see the log above)")
        raise TrainError(f"torchrun exited with status {done.returncode}{advice}")
