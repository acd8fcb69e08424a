"""The options of a training job, checked and completed before anything is built or launched.

Kept light (no Feast, no DuckDB) so that the CLI can take its defaults and choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tastyrec.model import AUTO_KINDS, MODEL_KINDS

SEED_SAMPLES = 10_000  # training rows for the seed's DLRM baseline (its model is slow by design)
SEED_EPOCHS = 2


def _endpoint(value: str | None) -> bool:
    host, _, port = (value or "").rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


class TrainError(Exception):
    """Training could not run (missing features, a failed worker, bad options)."""


SPLITS = ("time", "random")
MODEL_CHOICES = ("auto", *MODEL_KINDS)


@dataclass
class TrainOptions:
    """What `tastyrec train` takes (see its --help); the CLI's defaults are these.

    batch_size / lr: None means the model kind's own default (model.MODEL_KINDS).
    """

    epochs: int = 4
    nproc: int = 1
    batch_size: int | None = None
    lr: float | None = None
    max_samples: int | None = None
    split: str = "time"
    model: str = "auto"  # a MODEL_KINDS key, or "auto": every AUTO_KINDS, the best on validation
    seed: int = 0
    patience: int = 2
    train_windows: int | None = None  # newest training cutoffs to use; None: all that `features` built
    resume: bool = False
    reprobe: bool = False  # --model auto: compare the kinds again even on data a decision was made on
    progress: bool = True
    nnodes: int = 1  # machines; each runs `tastyrec train` with its --node-rank (see experiment.follow)
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of torchrun's c10d rendezvous, with nnodes > 1

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def resolved(self) -> "TrainOptions":
        """These options with the model kind's defaults filled in, after checking them. With
        "auto" every kind in AUTO_KINDS is checked and batch size / lr stay as given (each kind
        fills in its own when it is trained)."""
        if self.model not in MODEL_CHOICES:
            raise TrainError(f"--model must be one of {', '.join(MODEL_CHOICES)} (got {self.model!r})")
        if self.split not in SPLITS:
            raise TrainError(f"--split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if self.model == "auto":
            for kind in AUTO_KINDS:
                replace(self, model=kind).resolved()
            return self
        kind = MODEL_KINDS[self.model]
        opts = replace(self, batch_size=self.batch_size or kind.batch_size, lr=self.lr or kind.lr)
        if min(opts.nproc, opts.epochs, opts.nnodes) < 1:
            raise TrainError("--nproc, --nnodes and --epochs must be at least 1")
        if not 0 <= opts.node_rank < opts.nnodes:
            raise TrainError(f"--node-rank must be 0..{opts.nnodes - 1} (got {opts.node_rank}; --nnodes {opts.nnodes})")
        if opts.nnodes > 1 and not _endpoint(opts.rdzv_endpoint):
            raise TrainError(f"--nnodes {opts.nnodes} needs --rdzv-endpoint HOST:PORT, an address of node 0 "
                             f"that every node can reach (got {opts.rdzv_endpoint!r})")
        if opts.batch_size % opts.world_size:
            raise TrainError(f"--batch-size {opts.batch_size} must be a multiple of --nproc x --nnodes "
                             f"{opts.world_size} (every process takes an equal share of each global batch)")
        if opts.train_windows is not None and opts.train_windows < 1:
            raise TrainError("--train-windows must be at least 1")
        if opts.max_samples is not None and opts.max_samples < 1:
            raise TrainError("--max-samples must be at least 1")
        return opts
