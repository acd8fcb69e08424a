"""The DDP training loop, launched by torchrun or called in-process.

    python -m torch.distributed.run --standalone --nproc-per-node N -m tastyrec.train --config run.json

where run.json holds the fields of `TrainConfig`. Called as `train(config)` without torchrun's
environment it runs one process without DDP; the results are the same as torchrun with N = 1.

Why the results do not depend on N: every epoch all ranks draw the same seeded permutation of
the training rows (DistributedSampler with set_epoch does the same); rank r keeps every N-th row
of it starting at r, and its step-k mini-batch is rows k*B/N:(k+1)*B/N of that shard. Together
the ranks' step-k rows are exactly global batch k of a 1-process run. Each rank's loss is its
*sum* of per-row losses times N / (rows in global batch k); DDP averages gradients over the N
ranks, so the update is that of the global mean loss, even for a short last batch.

Checkpoints are written by the leader (rank 0; across machines the first process of node 0,
see distributed.share_from_node_zero) after every epoch (tmp file + os.replace, so a kill never
leaves a torn file). A run started again with the same checkpoint dir resumes after the last
completed epoch and ends with the same weights as an uninterrupted run: the permutation depends
only on (seed, epoch), and model, optimizer and early-stopping state are all restored. (On CUDA,
embedding backward kernels use atomic adds, so there "the same" means equal up to rounding.)

Outputs, in the checkpoint dir: `checkpoint.pt` (last epoch: model, optimizer, history, best
state) and `model.pt` (best weights + model kind + config: `model.save_model`, read by `model.load_model`); the leader also
writes the result JSON (per-epoch curves, best epoch, samples/s, seconds) to `output_path`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from tastyrec.config import log_progress
from tastyrec.distributed import (Dist, all_sum, epoch_permutation, global_batch_sizes, setup_distributed,
                                  share_from_node_zero)
from tastyrec.model import MODEL_FILE, build_model, save_model
from tastyrec.preprocess import Batch

CHECKPOINT_FILE = "checkpoint.pt"  # the last completed epoch: everything needed to resume
NODES_FILE = "nodes.json"  # across machines: which node ran which ranks (the leader writes it)
LOST_FILE = "lost-peers.json"  # across machines: node 0's processes lost contact with the others
# what gloo and nccl say when the process at the other end of a collective is gone
PEER_GONE = ("closed by peer", "reset by peer", "broken pipe", "timed out", "timeout", "connection refused")


@dataclass
class TrainConfig:
    """Everything one training run needs; JSON-able, so torchrun workers read it from a file.
    No defaults for the hyperparameters: the caller (experiment.TrainOptions) owns them.

    train_path / val_path: files written by `Batch.save` (train rows must carry labels).
    batch_size: the GLOBAL batch size, split evenly across ranks (must divide by world size).
    patience: epochs without a better validation loss before stopping early.
    num_threads: torch threads per process; default = CPU cores / local processes.
    """

    train_path: str
    val_path: str
    checkpoint_dir: str
    model_kind: str
    model_config: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    patience: int = 3
    output_path: str | None = None
    num_threads: int | None = None
    eval_batch_size: int = 65536
    progress: bool = True
    role: str = ""  # what the run is for, named in its epoch lines: "probe" (`--model auto`'s one-epoch trial)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls(**json.loads(Path(path).read_text()))

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))


@dataclass
class TrainResult:
    """What a run produced; `to_dict` is the result JSON the leader writes."""

    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss, seconds, samples_per_s
    best_epoch: int  # 1-based; 0 if no epoch ran
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    samples_per_s: float  # training rows per second of training-phase time, over all epochs run
    seconds: float  # wall time of this call (a resumed call counts only its own epochs)
    world_size: int
    device: str
    model_path: str
    checkpoint_path: str
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # best weights

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("state_dict")
        return d


class DLRMTrain(nn.Module):
    """The model plus its loss (kept out of the model): returns the SUM of per-row BCE losses
    and the logits, so ranks holding different row counts can be weighted exactly."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="sum")

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(*batch.inputs())  # (B,)
        return self.loss_fn(logits, batch.label), logits.detach()


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _load_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    mine = (config.model_kind, config.model_config, config.seed, config.batch_size, config.lr)
    theirs = (ckpt["model_kind"], ckpt["model_config"], ckpt["seed"], ckpt["batch_size"], ckpt["lr"])
    if mine != theirs:
        raise ValueError(
            f"{path} belongs to another run (kind, config, seed, batch size or lr differ); "
            "use a fresh checkpoint dir"
        )
    return ckpt


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _loss_sum(model: nn.Module, data: Batch, rows: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Sum of per-row BCE losses of `model` over `data`'s `rows`, gathered in chunks."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(rows), batch_size):
        part = data.take(rows[start:start + batch_size]).to(device)
        assert part.label is not None
        logits = model(*part.inputs())
        total += nn.functional.binary_cross_entropy_with_logits(logits, part.label, reduction="sum").double()
    model.train(was_training)
    return float(total)


def _progress(enabled: bool) -> Progress:
    """The leader's bar on stderr (stdout stays free for --json); drawn only on a terminal."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and _live(console)),
    )


def _live(console: Console) -> bool:
    """Whether bars can be redrawn: a terminal (the same test as the CLI's cli.base.live)."""
    return console.is_terminal and not console.is_dumb_terminal


def _say(bar: Progress, text: str) -> None:
    """A message of the leader: above the bar on a terminal; elsewhere (a log file, a pipe: the
    CLI's plain lines) one plain line, written out at once, also from a torchrun worker."""
    if _live(bar.console):
        bar.console.log(text)
    else:
        print(text, file=sys.stderr, flush=True)


def _epoch_line(kind: str, entry: dict[str, float], epochs: int) -> str:
    """E.g. "dlrm, epoch 1/4: loss 0.3120, val 0.2980, 18,476 samples/s (41.2 s)": the model kind
    (and "probe" for `--model auto`'s one-epoch trials), as `--model auto` trains several."""
    return (f"{kind}, epoch {entry['epoch']:.0f}/{epochs}: loss {entry['train_loss']:.4f}, "
            f"val {entry['val_loss']:.4f}, {entry['samples_per_s']:,.0f} samples/s ({entry['seconds']:.1f} s)")


@dataclass
class _RunState:
    """What survives a restart besides model and optimizer: progress and early stopping."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    bad_epochs: int = 0
    stopped: bool = False

    def end_epoch(self, entry: dict[str, float], model: nn.Module, patience: int) -> None:
        """Record a finished epoch; keep the weights if validation improved, else count down."""
        self.history.append(entry)
        self.epoch += 1
        if entry["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = entry["val_loss"], self.epoch, 0
            self.best_state = _clone_state(model)
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= patience

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """The optimizer of every kind: Adam, fused (one kernel for all parameters, on CPU too): the
    same update as the per-parameter loop; Adam is 0.5 ms of a 20 ms step on the default data
    (bench/epoch_profile.py), a few percent less per step than the loop."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def _train_epoch(
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Batch,
    shard: torch.Tensor,
    sizes: list[int],
    local_batch: int,
    world_size: int,
    device: torch.device,
    on_step: Callable[[int, torch.Tensor, int], None] | None,
) -> torch.Tensor:
    """One pass over this rank's shard (row indices into `data`) in steps of `local_batch` rows
    (global batch k has sizes[k] rows); returns the sum of this rank's per-row losses (float64, ()).
    Each step gathers its own rows: no copy of the shard, so memory stays that of the mapped file."""
    wrapped.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for k, n_k in enumerate(sizes):
        part = data.take(shard[k * local_batch:(k + 1) * local_batch]).to(device)
        loss, _ = wrapped(part)
        # sum * N / n_k on each rank, averaged over the N ranks by DDP = mean over global batch k
        (loss * (world_size / n_k)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = loss.detach()
        loss_sum += loss.double()
        if on_step is not None:
            on_step(k, loss, len(part))
    return loss_sum


def train(config: TrainConfig | None) -> TrainResult:
    """Train `config.model_kind` with DDP across the ranks torchrun started (or one process);
    see the module docstring for the data order, loss weighting and resume guarantees.
    config is None on the nodes other than node 0: they receive node 0's."""
    started = time.perf_counter()
    d = setup_distributed()
    threads = torch.get_num_threads()
    try:
        config = TrainConfig(**share_from_node_zero(config and dataclasses.asdict(config), d))
        try:
            return _train(config, d, started)
        except RuntimeError as e:
            _record_lost_peers(e, config, d)
            raise
    finally:
        # called in-process (one process), the caller keeps its own thread count: a serving
        # engine in the same process chose 1 thread (recommend.Engine), training must not undo it
        torch.set_num_threads(threads)
        if d.owns_group:
            dist.destroy_process_group()


def _record_lost_peers(error: RuntimeError, config: TrainConfig, d: Dist) -> None:
    """Across machines, when the leader's collective failed because other processes are gone,
    say so in the run folder: `tastyrec train` on node 0 then names the other nodes in its error."""
    if len(d.nodes) > 1 and d.is_leader and any(s in str(error).lower() for s in PEER_GONE):
        _write_json({"rank": d.rank, "error": str(error)[:500]}, Path(config.checkpoint_dir) / LOST_FILE)


def _train(config: TrainConfig, d: Dist, started: float) -> TrainResult:
    if config.batch_size % d.world_size:
        raise ValueError(f"batch_size {config.batch_size} must divide by world size {d.world_size}")
    # Processes on one machine share its cores; more threads than cores only adds contention.
    torch.set_num_threads(config.num_threads or max(1, (os.cpu_count() or 1) // d.local_world_size))

    # Every rank maps the files (mmap shares pages between processes) and gathers its rows per step.
    train_data, val_data = Batch.load(config.train_path), Batch.load(config.val_path)
    if train_data.label is None or val_data.label is None:
        raise ValueError("training and validation files need labels")
    n_train, n_val = len(train_data), len(val_data)
    val_rows = torch.arange(d.rank, n_val, d.world_size)  # each rank scores every N-th validation row
    sizes = global_batch_sizes(n_train, config.batch_size)

    torch.manual_seed(config.seed)  # identical initial weights on every rank and every run
    model = build_model(config.model_kind, config.model_config).to(d.device)
    optimizer = adam(model, config.lr)
    ckpt_dir = Path(config.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path = ckpt_dir / CHECKPOINT_FILE, ckpt_dir / MODEL_FILE
    if d.is_leader and len(d.nodes) > 1:
        (ckpt_dir / LOST_FILE).unlink(missing_ok=True)
        _write_json({str(node): v for node, v in d.nodes.items()}, ckpt_dir / NODES_FILE)
    state = _RunState(best_state=_clone_state(model))
    if (ckpt := _load_checkpoint(ckpt_path, config)) is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = _RunState(**{f.name: ckpt[f.name] for f in dataclasses.fields(_RunState)})

    wrapped: nn.Module = DLRMTrain(model)
    if d.enabled:
        wrapped = DDP(wrapped, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    show = config.progress and d.is_leader
    train_seconds, rows_trained = 0.0, 0
    with _progress(show) as bar:
        task = bar.add_task("train", total=len(sizes), epoch=0, loss=float("nan"))

        def on_step(k: int, loss: torch.Tensor, rows: int) -> None:
            if k % 20 == 0 or k == len(sizes) - 1:  # .item() syncs a GPU: not every step
                bar.update(task, completed=k + 1, loss=loss.item() / max(1, rows))

        if show and 0 < state.epoch < config.epochs and not state.stopped:
            _say(bar, f"{config.model_kind}: continuing from its checkpoint of epoch {state.epoch}")
        while state.epoch < config.epochs and not state.stopped:
            bar.reset(task, total=len(sizes), epoch=state.epoch + 1, loss=float("nan"))
            t0 = time.perf_counter()
            shard = epoch_permutation(n_train, config.seed, state.epoch)[d.rank :: d.world_size]
            loss_sum = _train_epoch(
                wrapped, optimizer, train_data, shard, sizes, config.batch_size // d.world_size, d.world_size,
                d.device, on_step if show else None,
            )
            t_train = time.perf_counter() - t0
            train_total, val_total = all_sum(
                [float(loss_sum), _loss_sum(model, val_data, val_rows, config.eval_batch_size, d.device)], d
            )
            train_seconds, rows_trained = train_seconds + t_train, rows_trained + n_train
            entry = {
                "epoch": state.epoch + 1, "train_loss": train_total / n_train, "val_loss": val_total / n_val,
                "seconds": time.perf_counter() - t0, "samples_per_s": n_train / t_train,
            }
            state.end_epoch(entry, model, config.patience)
            if d.is_leader:
                log_progress(f"epoch {config.model_kind}", state.epoch, config.epochs)
            if d.is_leader:
                _atomic_save({
                    **state.to_dict(), "model": _clone_state(model), "optimizer": optimizer.state_dict(),
                    "model_kind": config.model_kind, "model_config": config.model_config,
                    "seed": config.seed, "batch_size": config.batch_size, "lr": config.lr,
                }, ckpt_path)
            if show:
                _say(bar, _epoch_line(" ".join(filter(None, (config.model_kind, config.role))), entry, config.epochs))
            if d.enabled:
                dist.barrier()  # no rank starts the next epoch before the checkpoint is on disk

    model.load_state_dict(state.best_state)
    if d.is_leader:
        save_model(model_path, state.best_state, config.model_kind, config.model_config)
    result = TrainResult(
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        epochs_run=state.epoch,
        stopped_early=state.stopped,
        samples_per_s=rows_trained / train_seconds if train_seconds else 0.0,
        seconds=time.perf_counter() - started,
        world_size=d.world_size,
        device=str(d.device),
        model_path=str(model_path),
        checkpoint_path=str(ckpt_path),
        state_dict=state.best_state,
    )
    if d.is_leader and config.output_path:
        _write_json(result.to_dict(), Path(config.output_path))
    return result


def _write_json(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    """Entry point for torchrun: `-m tastyrec.train --config run.json`."""
    parser = argparse.ArgumentParser(prog="tastyrec.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON file with the fields of TrainConfig (node 0); "
                                         "omitted on the other nodes, which receive node 0's")
    args = parser.parse_args(argv)
    try:
        train(TrainConfig.from_json(args.config) if args.config else None)
    except KeyboardInterrupt:  # Ctrl-C reaches every worker too: `tastyrec train` says it, once
        sys.exit(130)


if __name__ == "__main__":
    main()
