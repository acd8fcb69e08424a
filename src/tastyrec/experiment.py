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
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tastyrec.columns import ITEM_PURCHASE_COUNT
from tastyrec.config import Progress, Workspace
from tastyrec.distributed import NODE_RANK_ENV
from tastyrec.features.build import FeaturesError, built_features
from tastyrec.features.training import TrainingSet, build_training_set
from tastyrec.model import AUTO_KINDS, MODEL_FILE, MODEL_KINDS, model_config
from tastyrec.options import TrainError, TrainOptions
from tastyrec.parquet_rows import ParquetRows, release_memory
from tastyrec.predictor import Predictor
from tastyrec.preprocess import Batch, Preprocessor, narrow_folder
from tastyrec.train import CHECKPOINT_FILE, LOST_FILE, NODES_FILE, TrainConfig, train

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


@dataclass
class _Run:
    """A prepared run: its folder, its training config (tensors written) and preprocessor."""

    opts: TrainOptions
    run_dir: Path
    config: TrainConfig
    preprocessor: Preprocessor


def _training_set(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None,
                  progress: Progress | None = None) -> TrainingSet:
    try:
        return training_set or build_training_set(ws, opts.split, seed=opts.seed, train_windows=opts.train_windows,
                                                  progress=progress)
    except FeaturesError as e:
        raise TrainError(str(e)) from None


def _read_rows(training_set: TrainingSet, opts: TrainOptions, kind: str) -> tuple[ParquetRows, ParquetRows]:
    """The training and validation rows `kind` trains on (capped by --max-samples; buyers only
    when the kind says so), to be read chunk by chunk."""
    buyers_only = MODEL_KINDS[kind].buyers_only
    return tuple(ParquetRows.open(training_set.paths[split], opts.max_samples, opts.seed, buyers_only)
                 for split in ("train", "val"))


TENSORS = {"train": "train_tensors", "val": "val_tensors"}  # split -> tensor folder in a run folder


@dataclass
class _Prepared:
    """A fitted preprocessor and the training and validation tensors it wrote for a model kind
    (tensor folders, see preprocess.Batch.save)."""

    kind: str
    preprocessor: Preprocessor
    folder: Path  # where its tensor folders are (a run folder)

    @classmethod
    def of(cls, kind: str, rows: tuple[ParquetRows, ParquetRows], folder: Path,
           progress: Progress | None = None) -> _Prepared:
        """Fit `kind`'s preprocessing on the training rows only (the vocabularies, then the
        training tensors and the dense ranges), transform the validation rows into tensor folders
        under `folder` too."""
        train_rows, val_rows = rows
        preprocessor = Preprocessor(MODEL_KINDS[kind].feature_set)
        preprocessor.fit_transform_rows(train_rows, folder / TENSORS["train"], progress, "training tensors")
        preprocessor.transform_rows(val_rows, folder / TENSORS["val"], progress, "validation tensors")
        return cls(kind, preprocessor, folder)

    def narrowed(self, kind: str, folder: Path) -> _Prepared:
        """The same for a kind that reads fewer sparse columns of the same rows (see
        Preprocessor.narrowed), its tensors copied under `folder` with only its sparse columns:
        one fit and transform serves every kind of `--model auto`."""
        if MODEL_KINDS[kind].buyers_only != MODEL_KINDS[self.kind].buyers_only:
            raise ValueError(f"{kind!r} trains on other rows than {self.kind!r}")
        preprocessor, keep = self.preprocessor.narrowed(MODEL_KINDS[kind].feature_set)
        for name in TENSORS.values():
            narrow_folder(self.folder / name, folder / name, keep)
        return _Prepared(kind, preprocessor, folder)


def explore_head(kind: str, preprocessor: Preprocessor) -> dict[str, int]:
    """The DLRMs get an explore head for cross-sell, told apart by item_purchase_count == 0."""
    if kind == "seed-dlrm" or ITEM_PURCHASE_COUNT not in preprocessor.dense:
        return {}
    return {"explore_column": preprocessor.dense.index(ITEM_PURCHASE_COUNT)}


def _prepare(ws: Workspace, opts: TrainOptions, rows: tuple[ParquetRows, ParquetRows],
             prepared: _Prepared | None = None, progress: Progress | None = None, run_dir: Path | None = None) -> _Run:
    """Write the tensors (fitted on the training rows unless `prepared`, whose tensors are in
    `run_dir` then) and the training config."""
    run_dir = run_dir or _run_dir(ws, opts)
    kind = MODEL_KINDS[opts.model]
    prepared = prepared or _Prepared.of(opts.model, rows, run_dir, progress)
    if prepared.folder != run_dir:
        raise ValueError(f"the tensors of {prepared.kind!r} are in {prepared.folder}, not in {run_dir}")
    preprocessor = prepared.preprocessor
    config = TrainConfig(
        train_path=str(run_dir / TENSORS["train"]), val_path=str(run_dir / TENSORS["val"]), checkpoint_dir=str(run_dir),
        model_kind=opts.model,
        model_config=model_config(opts.model, preprocessor.cardinalities, preprocessor.bag_sizes,
                                  len(preprocessor.dense), **explore_head(opts.model, preprocessor)),
        epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, patience=opts.patience,
        output_path=str(run_dir / "result.json"), progress=opts.progress, eval_batch_size=kind.score_batch)
    return _Run(opts, run_dir, config, preprocessor)


def _fit(run: _Run, epochs: int, alone: bool = False, role: str = "") -> dict:
    """Train up to `epochs` (continuing from the run's checkpoint, if any); the result dict.
    alone: on this machine only, even when the run spans several (`--model auto`'s probes).
    role: named in the epoch lines ("probe")."""
    opts = replace(run.opts, nnodes=1, rdzv_endpoint=None) if alone else run.opts
    config = replace(run.config, epochs=epochs, role=role)
    config_path = run.run_dir / "train_config.json"
    config.to_json(config_path)
    if opts.world_size == 1:
        train(config)
    else:
        _torchrun(opts, config_path, run.run_dir)
    return json.loads((run.run_dir / "result.json").read_text())


EXPLORE_ROWS = 2_000_000  # at most this many training rows (drawn with a fixed seed) fit the explore head


def _new_item_ndcg(scores, batch: Batch, new) -> float:
    """NDCG@10 of `scores` among the rows of items new to the customer, per (customer, snapshot)."""
    import pandas as pd

    from tastyrec.columns import CUSTOMER_ID, ITEM, LABEL
    from tastyrec.metrics import ranking_metrics

    rows = np.flatnonzero(new)  # only these are ranked: evaluate_scores' new_ndcg@10, without the rest
    groups = batch.groups.numpy()[rows] if batch.groups is not None else np.zeros(len(rows), dtype=np.int64)
    frame = pd.DataFrame({CUSTOMER_ID: groups, ITEM: rows, LABEL: batch.label.numpy()[rows],
                          "score": np.asarray(scores)[rows]})
    return float(ranking_metrics(frame, "score", ks=(10,))["ndcg@10"] or 0.0)


# Besides the head on every dense input, heads on one input alone are tried: each the logistic
# regression of the same rows on that input, so it ranks as the baseline it mirrors (item-kNN,
# EASE) and still gives probabilities. On Ta-Feng's January cut of 400 items point-in-time
# item-kNN ranked new items better than the head on every input (docs/model.md: "What was tried on Ta-Feng").
EXPLORE_SINGLE = ("item_cosine_score", "item_ease_score", "item_knn_score")


def fit_explore_head(model_file: Path, train: Batch, val: Batch, seed: int = 0,
                     dense: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any] | None:
    """Fit the explore head of a trained DLRM (model.DLRM) and keep it if the validation window
    says so: a logistic regression (scikit-learn, L-BFGS) on the scaled dense inputs of the
    training rows of items new to the customer, on all of them and on each EXPLORE_SINGLE input
    alone (`dense`: the names of the dense inputs). Convex, so fitted to the end, apart from the
    DLRM's epochs. The one that ranks the validation rows of such items best (NDCG@10) is kept
    when it beats the main head; otherwise the model is saved without a head and the main head
    ranks cross-sell too. Returns what was fitted and decided (None: the model has no explore head)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from tastyrec.model import build_model, save_model

    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    kind, config, state = saved["model_kind"], saved["model_config"], saved["state_dict"]
    column = config.get("explore_column")
    if column is None:
        return None
    x = train.dense.numpy()
    rows = np.flatnonzero(x[:, column] <= 0)
    if len(rows) > EXPLORE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, EXPLORE_ROWS, replace=False))
    labels, x = train.label.numpy()[rows], x[rows]  # the chosen rows, gathered once for every head
    out: dict[str, Any] = {"rows": int(len(rows)), "positives": int(labels.sum())}
    if len(np.unique(labels)) == 2:
        inputs = {"every input": list(range(x.shape[1]))} | {
            name: [dense.index(name)] for name in EXPLORE_SINGLE if dense and name in dense}
        new = val.dense[:, column].numpy() <= 0
        model = build_model(kind, config)
        model.load_state_dict(state)
        with torch.no_grad():  # the main head, once: the explore heads are dense @ weight + bias
            main_scores = torch.cat([model.eval()(*val.slice(i, i + 65_536).inputs())
                                     for i in range(0, len(val), 65_536)]).numpy()
        main = _new_item_ndcg(main_scores, val, new)
        scores, heads = {}, {}
        for name, columns in inputs.items():
            fitted = LogisticRegression(C=1.0, max_iter=500).fit(x[:, columns], labels)
            weight = np.zeros(x.shape[1], np.float32)
            weight[columns] = fitted.coef_[0]
            heads[name] = (torch.as_tensor(weight), torch.as_tensor(fitted.intercept_[0], dtype=torch.float32))
            scores[name] = _new_item_ndcg((val.dense @ heads[name][0] + heads[name][1]).numpy(), val, new)
            if progress:
                progress("explore head", len(scores), len(inputs))
        best = max(scores, key=scores.get)
        state["explore_weight"], state["explore_bias"] = heads[best]
        out["validation_new_ndcg@10"] = {"main": main, "explore": scores[best], "heads": scores}
        out["inputs"] = best
        out["kept"] = scores[best] > main
    else:  # nothing to learn from
        out["kept"] = False
    if not out["kept"]:
        config = {**config, "explore_column": None}
        state = {k: v for k, v in state.items() if not k.startswith("explore_")}
    save_model(model_file, state, kind, config)
    return out


def _finish(run: _Run, training_set: TrainingSet, result: dict, started: float,
            progress: Progress | None = None) -> TrainOutcome:
    """The model directory (preprocessing + model file, its explore head fitted); the tensors are
    deleted (rebuilt when needed)."""
    explore = fit_explore_head(run.run_dir / MODEL_FILE, Batch.load(run.run_dir / TENSORS["train"]),
                               Batch.load(run.run_dir / TENSORS["val"]), run.opts.seed, run.preprocessor.dense, progress)
    if explore is not None:
        result = {**result, "explore_head": explore}
    model_dir = Predictor.write_dir(run.run_dir / "model", run.preprocessor, run.run_dir / MODEL_FILE)
    for tensors in TENSORS.values():
        shutil.rmtree(run.run_dir / tensors, ignore_errors=True)
    return TrainOutcome(run_dir=str(run.run_dir), model_dir=str(model_dir), options=asdict(run.opts),
                        training_set=asdict(training_set), result=result,
                        seconds=round(time.perf_counter() - started, 2))


def train_model(ws: Workspace, opts: TrainOptions, training_set: TrainingSet | None = None,
                progress: Progress | None = None) -> TrainOutcome:
    """Fit preprocessing on the training rows, train with torchrun, write the model directory.
    With --model auto, the AUTO_KINDS that does best on validation (`train_best`)."""
    if opts.model == "auto":
        return train_best(ws, opts, AUTO_KINDS, training_set, progress)[0]
    opts = opts.resolved()
    started = time.perf_counter()
    training_set = _training_set(ws, opts, training_set, progress)
    run = _prepare(ws, opts, _read_rows(training_set, opts, opts.model), progress=progress)
    release_memory()  # the tensors are on disk: training maps them
    return _finish(run, training_set, _fit(run, opts.epochs), started, progress)


def train_best(ws: Workspace, opts: TrainOptions, kinds: tuple[str, ...],
               training_set: TrainingSet | None = None,
               progress: Progress | None = None) -> tuple[TrainOutcome, dict[str, float]]:
    """Prepare every model kind on the same rows, train each for one epoch and continue only the
    one with the lowest validation loss (the validation window is the judge). Returns the kept
    run and {kind: validation loss after one epoch}. With --resume, an unfinished run of one of
    the kinds (the one chosen before the run was killed) is continued instead."""
    if opts.resume:
        for kind in kinds:
            if _unfinished(ws, replace(opts, model=kind)):
                return train_model(ws, replace(opts, model=kind), training_set, progress), {}
    opts = opts.resolved()
    started = time.perf_counter()
    training_set = _training_set(ws, opts, training_set, progress)
    key = _choice_key(ws, opts, kinds, training_set)
    if not opts.reprobe and (carried := _carried_choice(ws, key)):
        if progress:
            progress(f"--model auto: {carried['kind']}, as chosen on the same data on {carried['at']} "
                     "(--reprobe compares again)", 1, 1)
        outcome = train_model(ws, replace(opts, model=carried["kind"]), training_set, progress)
        outcome.result["model_choice"] = f"carried over from {carried['at']}"
        return outcome, carried["losses"]
    rows = _read_rows(training_set, opts, kinds[0])
    options = {kind: replace(opts, model=kind).resolved() for kind in kinds}
    folders = {kind: _run_dir(ws, options[kind]) for kind in kinds}
    full = _Prepared.of(kinds[0], rows, folders[kinds[0]], progress)  # the first kind reads every column the others read
    runs = {kind: _prepare(ws, options[kind], rows, full if kind == kinds[0] else full.narrowed(kind, folders[kind]),
                           run_dir=folders[kind]) for kind in kinds}
    del full, rows
    release_memory()
    losses = {kind: float(_fit(run, 1, alone=True, role="probe")["best_val_loss"]) for kind, run in runs.items()}
    best = min(losses, key=losses.__getitem__)
    for kind, run in runs.items():
        if kind != best:
            shutil.rmtree(run.run_dir)  # a one-epoch probe, not a model anyone will use
    choice = ws.home / CHOICE_FILE
    choice.with_suffix(".tmp").write_text(json.dumps(
        {"key": key, "kind": best, "losses": losses, "at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    os.replace(choice.with_suffix(".tmp"), choice)
    outcome = _finish(runs[best], training_set, _fit(runs[best], opts.epochs), started, progress)
    outcome.result["model_choice"] = "probed"
    return outcome, losses


# `--model auto`'s last decision and what it was made on, in the home: a later run on the same
# data (the same warehouse, windows and cutoffs, the same rows and seed) trains the kind chosen
# then without the probes (one epoch of each kind), unless --reprobe.
CHOICE_FILE = "model_choice.json"


def _choice_key(ws: Workspace, opts: TrainOptions, kinds: tuple[str, ...], training_set: TrainingSet) -> dict:
    """What a `--model auto` decision depends on, as JSON would give it back."""
    built = built_features(ws)
    key = {"warehouse": built.warehouse, "until": built.until, "windows": built.windows,
           "cutoffs": training_set.cutoffs, "split": opts.split, "train_windows": opts.train_windows,
           "max_samples": opts.max_samples, "seed": opts.seed, "kinds": list(kinds)}
    return json.loads(json.dumps(key))


def _carried_choice(ws: Workspace, key: dict) -> dict | None:
    """The recorded decision when it was made on `key`'s data, else None."""
    try:
        recorded = json.loads((ws.home / CHOICE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return recorded if recorded.get("key") == key and recorded.get("kind") in key["kinds"] else None


def follow(opts: TrainOptions, wait_s: float = 3600) -> None:
    """`tastyrec train --node-rank R` with R > 0: wait until node 0 opens the rendezvous (node 0
    first prepares the data and, with --model auto, runs the one-epoch probes by itself), then
    train with it. Node 0 reads and writes the run folder on the shared home, evaluates and
    registers; this node only trains."""
    opts = opts.resolved()
    host, _, port = opts.rdzv_endpoint.rpartition(":")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise TrainError(f"node {opts.node_rank}: node 0 did not open the rendezvous at "
                                 f"{opts.rdzv_endpoint} within {wait_s:.0f} s; start `tastyrec train "
                                 f"--node-rank 0 --nnodes {opts.nnodes} --rdzv-endpoint {opts.rdzv_endpoint}` "
                                 "there") from None
            time.sleep(1)
    _torchrun(opts, None, None)


def _torchrun(opts: TrainOptions, config_path: Path | None, run_dir: Path | None) -> None:
    """torchrun ... -m tastyrec.train [--config config_path]: --standalone on one machine, the
    c10d rendezvous at --rdzv-endpoint across --nnodes machines (node 0 passes the config)."""
    if opts.nnodes == 1:
        where = ["--standalone"]
    else:  # node ranks are ours (NODE_RANK_ENV): c10d numbers the agents as they arrive
        host = "true" if opts.node_rank == 0 else "false"  # node 0 holds the rendezvous store
        where = [f"--nnodes={opts.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={opts.rdzv_endpoint}",
                 "--rdzv-id=tastyrec", f"--rdzv-conf=is_host={host}", "--max-restarts=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={opts.nproc}",
           "-m", "tastyrec.train", *(["--config", str(config_path)] if config_path else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // opts.nproc)),
           NODE_RANK_ENV: str(opts.node_rank)}
    # workers print progress: send it to the real stderr, stdout is for --json
    done = subprocess.run(cmd, env=env, stdout=sys.__stderr__)
    if done.returncode != 0:
        raise TrainError(_failure(opts, done.returncode, run_dir))


def _failure(opts: TrainOptions, status: int, run_dir: Path | None) -> str:
    """Why torchrun failed, which node it names, and whether --resume can continue."""
    where = f" on node {opts.node_rank} of {opts.nnodes}" if opts.nnodes > 1 else ""
    message = f"torchrun exited with status {status}{where}"
    if run_dir is None:  # a node other than node 0: node 0 holds the run folder
        return message + "; node 0's `tastyrec train` says whether --resume can continue"
    if (run_dir / LOST_FILE).exists() and (run_dir / NODES_FILE).exists():
        nodes = json.loads((run_dir / NODES_FILE).read_text())
        others = ", ".join(f"node {n} ({v['host']}, ranks {', '.join(map(str, v['ranks']))})"
                           for n, v in nodes.items() if n != "0")
        message += f": node 0 lost contact with {others}; a node that stops stops the run"
    if (run_dir / CHECKPOINT_FILE).exists():
        again = " on every node" if opts.nnodes > 1 else ""
        return message + f"; start again with --resume{again} to continue from the last completed epoch"
    return message + " before its first epoch ended (see the log above)"
