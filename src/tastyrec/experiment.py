"""One training run: training set -> preprocessing -> torchrun DDP -> model directory.

`train_model` is what the train and pipeline jobs (jobs.py) call; the DDP loop itself lives in
train.py and runs under torchrun (or in-process for one process). Each run folder under
<home>/checkpoints records its model kind and split in run.json, which is how `--resume`
finds the newest unfinished run of the same kind and split.
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
from tastyrec.features.build import FeaturesError
from tastyrec.features.training import TrainingSet, build_training_set
from tastyrec.model import MODEL_FILE, MODEL_KINDS, model_config
from tastyrec.options import TrainError, TrainOptions
from tastyrec.predictor import Predictor
from tastyrec.preprocess import Preprocessor
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


def _run_dir(ws: Workspace, opts: TrainOptions) -> Path:
    """A new run folder, or with resume the newest unfinished one of the same model and split."""
    mine = {"model": opts.model, "split": opts.split}
    if opts.resume and ws.checkpoints.exists():
        unfinished = sorted(p for p in ws.checkpoints.iterdir()
                            if (p / CHECKPOINT_FILE).exists() and not (p / "model").exists()
                            and _recorded(p) == mine)
        if unfinished:
            return unfinished[-1]
    run_dir = ws.checkpoints / f"{time.strftime('%Y%m%d-%H%M%S')}-{opts.model}-{opts.split}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(mine))
    return run_dir


def _sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    return frame if not n or n >= len(frame) else frame.sample(n=n, random_state=seed).reset_index(drop=True)


def train_model(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None = None) -> TrainOutcome:
    """Fit preprocessing on the training rows, train with torchrun, write the model directory."""
    opts = opts.resolved()
    assert opts.batch_size is not None and opts.lr is not None
    started = time.perf_counter()
    try:
        training_set = training_set or build_training_set(ws, opts.split, seed=opts.seed,
                                                          train_windows=opts.train_windows)
    except FeaturesError as e:
        raise TrainError(str(e)) from None
    run_dir = _run_dir(ws, opts)
    # Arrow-backed columns: the history bags stay Arrow lists instead of millions of Python lists
    train_rows = _sample(pd.read_parquet(training_set.paths["train"], dtype_backend="pyarrow"),
                         opts.max_samples, opts.seed)
    val_rows = _sample(pd.read_parquet(training_set.paths["val"], dtype_backend="pyarrow"),
                       opts.max_samples, opts.seed)
    kind = MODEL_KINDS[opts.model]
    preprocessor = Preprocessor(kind.feature_set).fit(train_rows)  # training rows only
    preprocessor.transform(train_rows).save(run_dir / "train.pt")
    preprocessor.transform(val_rows).save(run_dir / "val.pt")
    config = TrainConfig(
        train_path=str(run_dir / "train.pt"), val_path=str(run_dir / "val.pt"), checkpoint_dir=str(run_dir),
        model_kind=opts.model,
        model_config=model_config(opts.model, preprocessor.cardinalities, preprocessor.bag_sizes,
                                  len(preprocessor.dense)),
        epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, patience=opts.patience,
        output_path=str(run_dir / "result.json"), progress=opts.progress, eval_batch_size=kind.score_batch)
    config_path = run_dir / "train_config.json"
    config.to_json(config_path)
    if opts.nproc == 1:
        train(config)
    else:
        _torchrun(config_path, opts.nproc, run_dir)
    model_dir = Predictor.write_dir(run_dir / "model", preprocessor, run_dir / MODEL_FILE)
    for tensors in ("train.pt", "val.pt"):  # rebuilt from the training set when needed
        (run_dir / tensors).unlink(missing_ok=True)
    return TrainOutcome(run_dir=str(run_dir), model_dir=str(model_dir), options=asdict(opts),
                        training_set=asdict(training_set),
                        result=json.loads((run_dir / "result.json").read_text()),
                        seconds=round(time.perf_counter() - started, 2))


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
