"""Models: shapes, a hand-checked interaction, the seed port, config round trips, learning."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tastyrec.model import (
    DLRM,
    DLRMConfig,
    InteractionArch,
    SeedDLRM,
    SeedDLRMConfig,
    SeedFeatureInteraction,
    build_model,
    looked_up,
    model_config,
    pooled,
)
from tastyrec.preprocess import Preprocessor, synthetic_frame

CARDS = {"a": 5, "b": 7, "c": 3}
BAGS = {"h": 9}


def tiny_config() -> DLRMConfig:
    return DLRMConfig(CARDS, BAGS, n_dense=4, embedding_dim=6, bottom_mlp=[8], top_mlp=[12])


def random_inputs(batch: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in CARDS.values()], dim=1)
    dense = torch.rand(batch, 4, generator=g)
    bags = {"h": torch.randint(0, 9, (batch, 5), generator=g)}
    return sparse, dense, bags


def test_interaction_by_hand() -> None:
    dense = torch.tensor([[1.0, 2.0]])  # (1, D=2)
    sparse = torch.tensor([[[3.0, 4.0], [5.0, 6.0]]])  # (1, 2, D)
    out = InteractionArch(n_vectors=3)(dense, sparse)
    # dense, then d.s1 = 11, d.s2 = 17, s1.s2 = 39
    assert out.tolist() == [[1.0, 2.0, 11.0, 17.0, 39.0]]
    assert InteractionArch.output_dim(3, 2) == 5


def test_dlrm_shapes_and_logits() -> None:
    torch.manual_seed(0)
    model = DLRM(tiny_config())
    sparse, dense, bags = random_inputs()
    logits = model(sparse, dense, bags)
    assert logits.shape == (10,) and logits.dtype == torch.float32
    assert len(model.sparse_arch.embeddings) == 3 and len(model.sparse_arch.bags) == 1
    # 5 vectors interact (dense + 3 sparse + 1 bag): D + 5*4/2 = 6 + 10 inputs to the top MLP
    assert model.over_arch.mlp[0].in_features == 6 + 10


def test_empty_bag_embeds_to_zero_and_bags_matter() -> None:
    torch.manual_seed(0)
    model = DLRM(tiny_config())
    bag_table = model.sparse_arch.bags["h"]
    assert bag_table(torch.zeros(2, 5, dtype=torch.long)).abs().sum() == 0
    sparse, dense, bags = random_inputs(batch=4)
    changed = {"h": torch.zeros_like(bags["h"])}
    assert not torch.allclose(model(sparse, dense, bags), model(sparse, dense, changed))


@pytest.mark.parametrize("rows", [9, 57, 600])  # a product with the table below COUNTS_MAX_ROWS, a lookup above
def test_small_tables_as_products_give_the_lookups_values_and_gradients(rows: int) -> None:
    """pooled / looked_up replace EmbeddingBag / Embedding on small tables: the same vectors and
    the same gradients (padding left out of the means, an empty bag 0, a repeated item twice)."""
    g = torch.Generator().manual_seed(rows)
    bag, table = nn.EmbeddingBag(rows, 6, mode="mean", padding_idx=0), nn.Embedding(rows, 6)
    width = torch.randint(0, 8, (50,), generator=g)
    bags = torch.where(torch.arange(8) < width[:, None], torch.randint(1, rows, (50, 8), generator=g), 0).int()
    bags[0, :2] = bags[0, 2]  # the same item three times
    index = torch.randint(0, rows, (50,), generator=g).int()
    upstream = torch.randn(50, 6, generator=g)
    for product, lookup, inputs in ((pooled, bag, bags), (looked_up, table, index)):
        out = product(lookup, inputs)
        (out * upstream).sum().backward()
        grad, lookup.weight.grad = lookup.weight.grad, None
        expected = lookup(inputs)
        (expected * upstream).sum().backward()
        assert torch.allclose(out, expected, atol=1e-6) and torch.allclose(grad, lookup.weight.grad, atol=1e-5)
    assert pooled(bag, torch.zeros(3, 8, dtype=torch.int32)).abs().sum() == 0


def test_seed_interaction_matches_the_seed_code() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert SeedFeatureInteraction(3)(x).tolist() == [[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]]

    def seed_feature_interaction(inputs: torch.Tensor) -> torch.Tensor:
        """The seed notebook's FeatureInteraction.forward, verbatim in substance."""
        feature_dim = inputs.shape[1]
        concat_features = inputs.view(-1, feature_dim, 1)
        dot_products = torch.matmul(concat_features, concat_features.transpose(1, 2))
        mask = torch.triu(torch.ones_like(dot_products))
        return dot_products[mask.bool()].view(-1, feature_dim * (feature_dim + 1) // 2)

    x = torch.randn(5, 17, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(SeedFeatureInteraction(17)(x), seed_feature_interaction(x))


def test_seed_scoring_equals_its_training_forward() -> None:
    """Scoring (no autograd) computes the first top layer without building the products: the
    scores must be those of the seed's construction, which training differentiates."""
    torch.manual_seed(0)
    model = SeedDLRM(SeedDLRMConfig()).eval()
    sparse = torch.randint(0, 142, (37, 9), generator=torch.Generator().manual_seed(2))
    dense = torch.rand(37, 5, generator=torch.Generator().manual_seed(3))
    trained_way = model(sparse, dense)
    with torch.no_grad():
        scored = model(sparse, dense)
    assert trained_way.requires_grad and not scored.requires_grad
    assert torch.allclose(scored, trained_way, rtol=1e-5, atol=1e-5)
    x, extra = torch.randn(4, 6, generator=torch.Generator().manual_seed(4)), torch.randn(4, 2)
    layer = nn.Linear(6 * 7 // 2 + 2, 3)
    with torch.no_grad():
        expected = layer(torch.cat([SeedFeatureInteraction(6)(x), extra], dim=1))
        assert torch.allclose(SeedFeatureInteraction.first_layer(x, extra, layer), expected, atol=1e-5)


def test_seed_dlrm_has_the_published_sizes() -> None:
    model = SeedDLRM(SeedDLRMConfig())
    assert isinstance(model.embeddings, nn.EmbeddingBag) and model.embeddings.mode == "sum"
    assert tuple(model.embeddings.weight.shape) == (142, 128)
    assert [m.out_features for m in model.bottom_mlp if isinstance(m, nn.Linear)] == [256, 128]
    top = [m for m in model.top_mlp if isinstance(m, nn.Linear)]
    assert top[0].in_features == 256 * 257 // 2 + 128 and [m.out_features for m in top] == [128, 128, 1]
    sparse = torch.randint(0, 142, (3, 9), generator=torch.Generator().manual_seed(0))
    assert model(sparse, torch.rand(3, 5)).shape == (3,)
    # the 9 embeddings are summed into one vector: order of the features does not matter
    assert torch.allclose(model.embeddings(sparse), model.embeddings(sparse.flip(1)), atol=1e-6)


def test_model_config_sizes_seed_table_to_vocab() -> None:
    cfg = model_config("seed-dlrm", {f"f{i}": 300 if i == 0 else 10 for i in range(9)}, {}, 5)
    assert cfg["num_embeddings"] == 300 and cfg["n_sparse"] == 9
    assert model_config("seed-dlrm", {"a": 3}, {}, 5)["num_embeddings"] == 142
    with pytest.raises(ValueError):
        build_model("nope", {})


@pytest.mark.parametrize("kind", ["dlrm", "seed-dlrm"])
def test_rebuilt_from_json_config_gives_identical_outputs(kind: str) -> None:
    if kind == "dlrm":
        cfg = tiny_config().to_dict()
    else:
        cfg = SeedDLRMConfig(n_sparse=3, n_dense=4, num_embeddings=10, embedding_dim=4,
                             bottom_mlp=[8, 4], top_mlp=[6, 6]).to_dict()
    torch.manual_seed(0)
    model = build_model(kind, cfg).eval()
    again = build_model(kind, json.loads(json.dumps(cfg))).eval()
    again.load_state_dict(model.state_dict())
    sparse, dense, bags = random_inputs()
    assert torch.equal(model(sparse, dense, bags), again(sparse, dense, bags))


@pytest.fixture
def one_thread():
    """Small ops on 2 shared cores run far faster on one thread than on two fighting for a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["dlrm", "seed-dlrm"])
def test_loss_falls_on_a_small_generated_set(kind: str, one_thread: None) -> None:
    df = synthetic_frame(1024, seed=3)
    prep = Preprocessor("seed" if kind == "seed-dlrm" else "full").fit(df)
    batch = prep.transform(df)
    overrides = {"embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [16, 16]} if kind == "seed-dlrm" else {}
    torch.manual_seed(0)
    model = build_model(kind, model_config(kind, prep.cardinalities, prep.bag_sizes, len(prep.dense), **overrides))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(60):
        loss = loss_fn(model(batch.sparse, batch.dense, batch.bags), batch.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]

