"""The DLRM and the seed's published model, as pure nn.Modules that return logits.

No loss and no sigmoid live here: training wraps the model with its loss (train.py), serving
with candidates and ranking. Every model is rebuilt from a JSON-able config by `build_model`;
`save_model` / `load_model` own the model file, the one loading path used by training,
evaluation, the service, the app and the tests. `MODEL_KINDS` says what differs per kind.

Shapes: B = batch, F = sparse features, K = multi-hot features, L = bag width,
D = embedding dimension, N = F + K + 1 vectors that interact (the +1 is the dense output).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


def mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    """Linear layers through `sizes` with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# tastyrec's DLRM (TorchRec layout: SparseArch, DenseArch, InteractionArch, OverArch)
# ---------------------------------------------------------------------------------------------
@dataclass
class DLRMConfig:
    """Hyperparameters of `DLRM`; saved with the weights and used to rebuild it.

    cardinalities: embedding rows per sparse feature (unknown bucket 0 included), tensor order.
    bag_sizes: EmbeddingBag rows per multi-hot feature (padding 0 and unknown 1 included).
    bottom_mlp: hidden sizes of the dense MLP; a last layer of width embedding_dim is added.
    top_mlp: hidden sizes of the over MLP; a last layer of width 1 (the logit) is added.
    explore_column: the dense input that is 0 exactly where the customer never bought the item
    (item_purchase_count); when set, the model has an explore head for those rows (cross-sell:
    items new to the customer). None: one head (older models).
    """

    cardinalities: dict[str, int]
    bag_sizes: dict[str, int] = field(default_factory=dict)
    n_dense: int = 10
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64, 32])
    top_mlp: list[int] = field(default_factory=lambda: [128, 64])
    explore_column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DLRMConfig:
        return cls(**d)

    @property
    def n_vectors(self) -> int:
        """N: the dense output plus one embedding per sparse and per multi-hot feature."""
        return 1 + len(self.cardinalities) + len(self.bag_sizes)


class SparseArch(nn.Module):
    """One table per sparse feature (no index collisions between features) and one
    mean-pooled EmbeddingBag per multi-hot feature (padding index 0 is skipped)."""

    def __init__(self, cardinalities: dict[str, int], bag_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        tables = {name: nn.Embedding(n, dim) for name, n in cardinalities.items()}
        bags = {name: nn.EmbeddingBag(n, dim, mode="mean", padding_idx=0) for name, n in bag_sizes.items()}
        # DLRM's uniform(+-1/sqrt(rows)) init: N(0, 1) vectors make the first dot products huge.
        for weight in [t.weight for t in tables.values()] + [b.weight for b in bags.values()]:
            bound = weight.shape[0] ** -0.5
            nn.init.uniform_(weight, -bound, bound)
        with torch.no_grad():
            for bag in bags.values():
                bag.weight[0].zero_()  # the padding row
        self.embeddings = nn.ModuleDict(tables)
        self.bags = nn.ModuleDict(bags)

    def forward(self, sparse: torch.Tensor, bags: dict[str, torch.Tensor],
                bag_vectors: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """sparse (B, F) int64, bags name -> (B, L) int64  ->  (B, F + K, D); bag_vectors, name ->
        (B, D): the bags already embedded (`embed_bags`), used instead of bags."""
        vectors = [looked_up(table, sparse[:, j]) for j, table in enumerate(self.embeddings.values())]  # F x (B, D)
        if bag_vectors is not None:
            vectors += [bag_vectors[name] for name in self.bags]
        else:
            vectors += [pooled(bag, bags[name]) for name, bag in self.bags.items()]  # K x (B, D); empty bag -> 0
        return torch.stack(vectors, dim=1)


# Small tables are looked up as products with the table: (each row's item counts) @ table for a
# bag table of at most COUNTS_MAX_ROWS rows, one-hot rows @ table for a sparse feature's of at most
# ONE_HOT_MAX_ROWS. Forward + backward of 4,096 rows on CPU: a bag of the default data's 57 items
# 0.9 ms against EmbeddingBag's 4.5 ms (EmbeddingBag is faster past ~700 rows); a table of 8 rows
# 0.21 ms against nn.Embedding's 0.34 ms (the same at ~60 rows).
COUNTS_MAX_ROWS = 512
ONE_HOT_MAX_ROWS = 48


def looked_up(table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """table(index) for (B,) indices; on a small table (ONE_HOT_MAX_ROWS) as one-hot rows @ table."""
    if table.num_embeddings > ONE_HOT_MAX_ROWS:
        return table(index)
    one_hot = torch.zeros(index.shape[0], table.num_embeddings, dtype=table.weight.dtype, device=index.device)
    return one_hot.scatter_(1, index.long().unsqueeze(1), 1.0) @ table.weight


def pooled(bag: nn.EmbeddingBag, rows: torch.Tensor) -> torch.Tensor:
    """(B, L) bag rows padded with 0 -> (B, D): what bag(rows) gives (the mean of each row's
    items, padding left out, 0 for an empty row), as a product of item counts and the table on
    small tables (COUNTS_MAX_ROWS): the bags' lookups were a quarter of a training step."""
    if bag.num_embeddings > COUNTS_MAX_ROWS:
        return bag(rows)
    counts = torch.zeros(rows.shape[0], bag.num_embeddings, dtype=bag.weight.dtype, device=rows.device)
    counts.scatter_add_(1, rows.long(), torch.ones((), dtype=counts.dtype, device=rows.device).expand(rows.shape))
    counts[:, 0] = 0  # the padding
    return counts @ bag.weight / counts.sum(1, keepdim=True).clamp(min=1)


class DenseArch(nn.Module):
    """Bottom MLP: dense features to one vector of the embedding dimension."""

    def __init__(self, n_dense: int, hidden: list[int], dim: int) -> None:
        super().__init__()
        self.mlp = mlp([n_dense, *hidden, dim], last_activation=True)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, n_dense) -> (B, D)."""
        return self.mlp(dense)


class InteractionArch(nn.Module):
    """Pairwise dot products of the dense vector and every embedding (upper triangle, no
    diagonal), concatenated after the dense vector: output (B, D + N(N-1)/2)."""

    upper: torch.Tensor

    def __init__(self, n_vectors: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        # Positions of the upper triangle in the flattened (N * N) matrix: one index_select is
        # cheaper (forward and backward) than indexing with a (rows, cols) pair.
        self.register_buffer("upper", rows * n_vectors + cols, persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense (B, D), sparse (B, N - 1, D) -> (B, D + N(N-1)/2)."""
        vectors = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # (B, N, D)
        dots = torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1)  # (B, N * N)
        return torch.cat([dense, dots.index_select(1, self.upper)], dim=1)

    @staticmethod
    def output_dim(n_vectors: int, dim: int) -> int:
        return dim + n_vectors * (n_vectors - 1) // 2


class OverArch(nn.Module):
    """Top MLP: interaction features to one logit."""

    def __init__(self, n_in: int, hidden: list[int]) -> None:
        super().__init__()
        self.mlp = mlp([n_in, *hidden, 1], last_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in) -> (B,)."""
        return self.mlp(x).squeeze(-1)


class DLRM(nn.Module):
    """Deep Learning Recommendation Model: per-feature embeddings, history bags, bottom MLP,
    pairwise dot-product interaction, top MLP. Returns logits (B,).

    With `config.explore_column`, the explore head is a logistic regression on the scaled dense
    inputs (the collaborative scores, popularity, price, the customer's history): buffers, not
    parameters, fitted after training on the training rows of items new to the customer
    (`experiment.fit_explore_head`). On Ta-Feng's validation windows it ranked those items
    better than the main head or a second top MLP trained with it, which learn the season of
    their training windows (see docs/model.md). `heads` returns both logits, (B, 2)."""

    def __init__(self, config: DLRMConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.sparse_arch = SparseArch(config.cardinalities, config.bag_sizes, dim)
        self.dense_arch = DenseArch(config.n_dense, config.bottom_mlp, dim)
        self.inter_arch = InteractionArch(config.n_vectors)
        self.over_arch = OverArch(InteractionArch.output_dim(config.n_vectors, dim), config.top_mlp)
        self.explores = config.explore_column is not None
        if self.explores:
            self.register_buffer("explore_weight", torch.zeros(config.n_dense))
            self.register_buffer("explore_bias", torch.zeros(()))

    def forward(
        self, sparse: torch.Tensor, dense: torch.Tensor, bags: dict[str, torch.Tensor] | None = None,
        bag_vectors: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """sparse (B, F) int64, dense (B, n_dense) float32, bags name -> (B, L) -> logits (B,).
        bag_vectors: the rows' bags already embedded (name -> (B, D)), instead of bags."""
        embedded = self.sparse_arch(sparse, bags or {}, bag_vectors)  # (B, F + K, D)
        return self.over_arch(self.inter_arch(self.dense_arch(dense), embedded))

    def embed_bags(self, bags: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """name -> (G, L) bags  ->  name -> (G, D): what forward computes of each bag. Rows that
        share a bag (a customer's ~40 candidates) embed it once this way (Predictor)."""
        return {name: pooled(bag, bags[name]) for name, bag in self.sparse_arch.bags.items()}

    def heads(self, sparse: torch.Tensor, dense: torch.Tensor, bags: dict[str, torch.Tensor] | None = None,
              bag_vectors: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 2): the main logit and the explore head's."""
        if not self.explores:
            raise ValueError("this model has no explore head (it was trained before it existed)")
        return torch.stack([self(sparse, dense, bags, bag_vectors), dense @ self.explore_weight + self.explore_bias],
                           dim=1)


# ---------------------------------------------------------------------------------------------
# The seed's model, kept as a baseline
# ---------------------------------------------------------------------------------------------
SEED_NUM_EMBEDDINGS = 142  # the seed hard-coded this table size


@dataclass
class SeedDLRMConfig:
    """Hyperparameters of `SeedDLRM`, defaulting to the seed notebook's values.

    num_embeddings: rows of the one shared table; the seed used 142. It must exceed the largest
    index of any sparse feature, so `model_config` raises it when a vocabulary is bigger.
    """

    n_sparse: int = 9
    n_dense: int = 5
    num_embeddings: int = SEED_NUM_EMBEDDINGS
    embedding_dim: int = 128
    bottom_mlp: list[int] = field(default_factory=lambda: [256, 128])
    top_mlp: list[int] = field(default_factory=lambda: [128, 128])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedDLRMConfig:
        return cls(**d)


class SeedFeatureInteraction(nn.Module):
    """The seed's `FeatureInteraction`: it treats every *scalar* of its input as a feature, so
    its "dot products" are the products x_i * x_j of all pairs i <= j (diagonal included).

    Like the seed, it builds the (B, M, M) outer product and keeps its upper triangle in
    row-major order; an index_select of the flat triangle replaces the seed's boolean mask
    (same values, same order, cheaper backward). Output (B, M(M+1)/2).
    """

    upper: torch.Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(width, width, offset=0)
        self.register_buffer("upper", rows * width + cols, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M) -> (B, M(M+1)/2)."""
        outer = torch.bmm(x.unsqueeze(2), x.unsqueeze(1))  # (B, M, M)
        return outer.flatten(1).index_select(1, self.upper)

    @staticmethod
    def first_layer(x: torch.Tensor, extra: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """layer(cat([forward(x), extra])) for scoring (no autograd), without the products: the
        weights of the products x_i * x_i.. (one contiguous block per i, the triangle's row i) times
        x_i.., times x_i, summed over i. The same sums in another order (equal up to rounding), the
        (B, M(M+1)/2) products never built: 1.6x faster at M = 256, in less memory. Returns (B, H)."""
        x_t, width = x.T.contiguous(), x.shape[1]
        start = width * (width + 1) // 2
        out = torch.addmm(layer.bias.unsqueeze(1), layer.weight[:, start:], extra.T)  # (H, B)
        start = 0
        for i in range(width):
            out.addcmul_(layer.weight[:, start:start + width - i] @ x_t[i:], x_t[i])
            start += width - i
        return out.T


class SeedDLRM(nn.Module):
    """A port of the model in the Snowflake quickstart "Getting Started with Running Distributed
    PyTorch Models on Snowflake" (notebook 2_EndtoEndML_Consumer.ipynb, class `DLRM`).

    What it does, defects included, because it is the baseline to beat:
    - ONE shared `nn.EmbeddingBag(142, 128, mode='sum')` over the 9 label-encoded features: the
      9 embeddings are *summed* into a single 128-vector, and since every feature's codes start
      at the same small integers, different features share rows (index 3 of `city` is index 3
      of `gender`). Here code 0 is the unknown bucket of every feature (the seed had none).
    - bottom MLP on the 5 dense features: 5 -> 256 -> 128, ReLU after both layers.
    - `SeedFeatureInteraction` on the 256 scalars of [bottom output, summed embedding]:
      256 * 257 / 2 = 32,896 pairwise products, concatenated with the bottom output (128).
    - top MLP: 33,024 -> 128 -> 128 -> 1, ReLU between.
    - PyTorch's default initialisation (N(0, 1) embeddings), as in the seed.
    It returns logits (B,) (the seed returned (B, 1)) and ignores `bags`.
    """

    def __init__(self, config: SeedDLRMConfig) -> None:
        super().__init__()
        self.config = config
        dim, bottom, top = config.embedding_dim, config.bottom_mlp, config.top_mlp
        self.embeddings = nn.EmbeddingBag(config.num_embeddings, dim, mode="sum")
        self.bottom_mlp = mlp([config.n_dense, *bottom], last_activation=True)
        width = dim + bottom[-1]
        self.layer_feature_interaction = SeedFeatureInteraction(width)
        self.top_mlp = mlp([width * (width + 1) // 2 + bottom[-1], *top, 1], last_activation=False)

    def forward(
        self, sparse: torch.Tensor, dense: torch.Tensor, bags: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """sparse (B, 9) int64, dense (B, 5) float32 -> logits (B,). `bags` is ignored."""
        embedded = self.embeddings(sparse)  # (B, D): the 9 rows summed
        bottom = self.bottom_mlp(dense)  # (B, 128)
        x = torch.cat([bottom, embedded], dim=-1)  # (B, 256)
        if torch.is_grad_enabled():  # training: the seed's construction, differentiable
            interaction = self.layer_feature_interaction(x)  # (B, 32896)
            return self.top_mlp(torch.cat([interaction, bottom], dim=-1)).squeeze(-1)
        # scoring: the first top layer without the products; equal scores
        hidden = SeedFeatureInteraction.first_layer(x, bottom, self.top_mlp[0])
        return self.top_mlp[1:](hidden).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The model kinds, and the model file
# ---------------------------------------------------------------------------------------------
MODEL_FILE = "model.pt"  # kind + config + weights: everything needed to rebuild a trained model


@dataclass(frozen=True)
class ModelKind:
    """Everything that differs between model kinds, in one place.

    feature_set: the Preprocessor's column set ("full", "dense-items" or the seed's 9 + 5).
    buyers_only: train on the rows of the (customer, cutoff) pairs that bought something in the
    label window: the model learns which items, not whether the customer comes back (the
    ranking metrics rank items within buyers). The seed's model trains on every row, as it did.
    score_batch: rows per forward pass when scoring. The seed's model costs 4 million multiply-adds a row
    (32,896 pairwise products into a layer of 128), so its batches are smaller.
    batch_size / lr: training defaults; the seed's are the seed notebook's own.
    """

    config_class: type
    model_class: type
    feature_set: str
    score_batch: int
    batch_size: int
    lr: float
    buyers_only: bool = True


MODEL_KINDS: dict[str, ModelKind] = {
    "dlrm": ModelKind(DLRMConfig, DLRM, "full", score_batch=16_384, batch_size=4096, lr=2e-3),
    # the same DLRM without item embeddings: items only through their dense features. A smaller
    # step: on Ta-Feng, 2e-3 fits the training windows within the first epoch (12,000 customers:
    # test NDCG@10 0.193 at 2e-3, 0.234 at 5e-4, 0.231 at 3e-4, 0.224 at 1e-4)
    "dlrm-dense-items": ModelKind(DLRMConfig, DLRM, "dense-items", score_batch=16_384, batch_size=4096, lr=5e-4),
    "seed-dlrm": ModelKind(SeedDLRMConfig, SeedDLRM, "seed", score_batch=4_096, batch_size=256, lr=1e-3,
                           buyers_only=False),
}
# `--model auto` (the default) trains these and keeps the one with the lowest validation loss
AUTO_KINDS = ("dlrm", "dlrm-dense-items")


def model_kind(kind: str) -> ModelKind:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind]


def build_model(kind: str, config_dict: dict[str, Any]) -> nn.Module:
    """Rebuild a model of `kind` ('dlrm' or 'seed-dlrm') from its saved config dict."""
    spec = model_kind(kind)
    return spec.model_class(spec.config_class.from_dict(config_dict))


def model_config(
    kind: str,
    cardinalities: dict[str, int],
    bag_sizes: dict[str, int],
    n_dense: int,
    **overrides: Any,
) -> dict[str, Any]:
    """A config dict for `kind` sized from a fitted preprocessor's facts, plus overrides."""
    model_kind(kind)
    if kind == "seed-dlrm":
        rows = max([SEED_NUM_EMBEDDINGS, *cardinalities.values()])
        return SeedDLRMConfig(len(cardinalities), n_dense, rows, **overrides).to_dict()
    return DLRMConfig(dict(cardinalities), dict(bag_sizes), n_dense, **overrides).to_dict()


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], kind: str, config: dict[str, Any]) -> Path:
    """Write a model file: kind, config and weights (tmp file + rename: never half-written)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save({"model_kind": kind, "model_config": config, "state_dict": state_dict}, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | Path) -> tuple[nn.Module, str]:
    """The model a file holds, rebuilt from its saved kind and config, in eval mode, and its kind."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(saved["model_kind"], saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved["model_kind"]
