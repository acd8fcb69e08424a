"""The DDP plumbing of the training loop: the process group and the order of the data.

Every rank draws the same seeded permutation per epoch (`epoch_permutation`) and keeps its share
of each global batch (see train.py), so results do not depend on the number of processes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


# ---------------------------------------------------------------------------------------------
# process group
# ---------------------------------------------------------------------------------------------
NODE_RANK_ENV = "TASTYREC_NODE_RANK"  # set by `tastyrec train` for its torchrun workers


@dataclass
class Dist:
    rank: int
    world_size: int
    local_world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it
    leader: int = 0  # the rank that writes checkpoints and results: the first process of node 0
    nodes: dict[int, dict[str, Any]] = field(default_factory=dict)  # node rank -> {"host", "ranks"}

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == self.leader


def setup_distributed() -> Dist:
    """Join torchrun's process group (nccl + one GPU per process when CUDA is present, gloo on
    CPU), reuse one the caller already made, or run a single process without DDP."""
    use_cuda = torch.cuda.is_available()
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    else:
        rank, world, local_world, local_rank = 0, 1, 1, 0
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return Dist(rank, world, local_world, device, owns)


def share_from_node_zero(obj: Any, d: Dist) -> Any:
    """`obj` as node 0 has it, on every rank; sets d.leader to node 0's first rank.

    Across machines, torchrun's c10d rendezvous numbers the ranks in no fixed node order, and
    only node 0 (the `tastyrec train` that prepared the data) holds the run's config: the others
    pass None and receive it here."""
    if not d.enabled:
        return obj
    gathered: list[Any] = [None] * d.world_size
    dist.all_gather_object(gathered, (int(os.environ.get(NODE_RANK_ENV, "0")), socket.gethostname()))
    for rank, (node, host) in enumerate(gathered):
        d.nodes.setdefault(node, {"host": host, "ranks": []})["ranks"].append(rank)
    d.leader = d.nodes[0]["ranks"][0]
    shared = [obj]
    dist.broadcast_object_list(shared, src=d.leader)
    return shared[0]


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over ranks (float64, so loss sums of millions of rows stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------
# data order
# ---------------------------------------------------------------------------------------------
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The same permutation of n rows on every rank, determined by (seed, epoch) alone."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=g)


def global_batch_sizes(n: int, batch_size: int) -> list[int]:
    """Rows in each global batch of an epoch; the last one may be short."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]
