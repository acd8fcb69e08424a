"""Preprocessing: fitted on training rows, unknowns map to reserved indices, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tastyrec import columns as C, preprocess
from tastyrec.preprocess import Batch, Preprocessor, synthetic_frame


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return synthetic_frame(300, seed=0)


@pytest.fixture(scope="module")
def prep(train_df: pd.DataFrame) -> Preprocessor:
    return Preprocessor().fit(train_df)


def test_batch_shapes_and_ranges(prep: Preprocessor, train_df: pd.DataFrame) -> None:
    batch = prep.transform(train_df)
    n = len(train_df)
    assert batch.sparse.shape == (n, len(C.SPARSE)) and batch.sparse.dtype == torch.int32
    assert batch.dense.shape == (n, len(C.DENSE) + 2) and batch.dense.dtype == torch.float32  # + the collaborative two
    assert set(batch.bags) == set(C.MULTI_HOT)
    for name, bag in batch.bags.items():
        assert bag.dtype == torch.int32 and bag.shape == (n, prep.bag_lens[name])
        assert 0 <= int(bag.min()) and int(bag.max()) < prep.bag_sizes[name]
    assert batch.label is not None and batch.label.dtype == torch.float32 and batch.label.shape == (n,)
    cards = torch.tensor(list(prep.cardinalities.values()))
    assert bool((batch.sparse >= 1).all()), "every training category is known"
    assert bool((batch.sparse < cards).all())
    assert float(batch.dense.min()) >= 0.0 and float(batch.dense.max()) <= 1.0
    assert not torch.isnan(batch.dense).any()


def test_bag_encoding_keeps_order_and_pads(prep: Preprocessor, train_df: pd.DataFrame) -> None:
    batch = prep.transform(train_df.head(20))
    vocab = prep.bag_vocabs["history_items"]
    for row, items in zip(batch.bags["history_items"].tolist(), train_df["history_items"].head(20)):
        width = prep.bag_lens["history_items"]
        expected = [vocab.index(item) + 2 for item in items][:width]
        assert row == expected + [0] * (width - len(expected))


def test_unseen_missing_and_unknown_values(prep: Preprocessor, train_df: pd.DataFrame) -> None:
    new = train_df.head(4).copy()
    new.loc[new.index[0], "city"] = "Atlantis"  # never seen in training
    new.loc[new.index[1], "city"] = None  # missing
    new.loc[new.index[2], "sale_price_usd"] = np.nan
    new.loc[new.index[3], "sale_price_usd"] = 1e9  # far above the training max: clipped
    new["history_items"] = pd.Series(
        [np.array(["item_00", "no_such_item"], dtype=object), None, [], ["no_such_item"]], index=new.index
    )
    new = new.drop(columns=[C.LABEL])
    batch = prep.transform(new)
    city = C.SPARSE.index("city")
    assert batch.sparse[0, city] == 0 and batch.sparse[1, city] == 0
    assert batch.sparse[2, city] > 0
    bags = batch.bags["history_items"]
    assert bags[0, :2].tolist() == [prep.bag_vocabs["history_items"].index("item_00") + 2, 1]
    assert bags[1].abs().sum() == 0 and bags[2].abs().sum() == 0  # None and [] are empty bags
    assert bags[3, 0] == 1 and bags[3, 1:].abs().sum() == 0
    price = C.DENSE.index("sale_price_usd")
    assert float(batch.dense[3, price]) == 1.0
    assert not torch.isnan(batch.dense).any()
    assert batch.label is None


def test_arrow_backed_rows_fit_and_encode_as_python_rows(train_df: pd.DataFrame) -> None:
    """Rows read from Parquet are Arrow-backed and their sparse columns are encoded by Arrow's hash
    lookup: the same vocabularies and codes as Python strings, an unseen or missing value -> 0."""
    import pyarrow as pa

    fit_df = train_df.copy()
    fit_df.loc[fit_df.index[0], "gender"] = None  # a missing value is no category
    fit_df["marital_status"] = None  # nor a column of them (Ta-Feng has no marital status): no vocabulary
    arrow_df = pa.Table.from_pandas(fit_df, preserve_index=False).to_pandas(types_mapper=pd.ArrowDtype)
    assert isinstance(arrow_df["city"].dtype, pd.ArrowDtype)
    python, arrow = Preprocessor().fit(fit_df), Preprocessor().fit(arrow_df)
    assert arrow.vocabs == python.vocabs
    new = train_df.head(4).copy()
    new.loc[new.index[0], "city"], new.loc[new.index[1], "city"] = "Atlantis", None
    arrow_new = pa.Table.from_pandas(new, preserve_index=False).to_pandas(types_mapper=pd.ArrowDtype)
    expected, got = python.transform(new), python.transform(arrow_new)
    assert torch.equal(got.sparse, expected.sparse) and torch.equal(got.dense, expected.dense)
    assert got.sparse[0, C.SPARSE.index("city")] == 0 == got.sparse[1, C.SPARSE.index("city")]
    assert int(got.sparse[2:, C.SPARSE.index("city")].min()) >= 1
    assert (got.sparse[:, C.SPARSE.index("marital_status")] == 0).all()


def test_vocab_comes_from_training_rows_only(train_df: pd.DataFrame) -> None:
    other = synthetic_frame(50, seed=1)
    other["gender"] = "Only In Validation"
    prep = Preprocessor().fit(train_df)
    assert "Only In Validation" not in prep.vocabs["gender"]
    assert int(prep.transform(other).sparse[:, C.SPARSE.index("gender")].max()) == 0


def test_bag_length_is_capped(train_df: pd.DataFrame) -> None:
    prep = Preprocessor(max_bag_len=3).fit(train_df)
    batch = prep.transform(train_df)
    assert prep.bag_lens["history_items"] == 3 and batch.bags["history_items"].shape[1] == 3


def test_json_round_trip_gives_identical_tensors(prep: Preprocessor) -> None:
    fresh = synthetic_frame(120, seed=7)
    restored = Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    a, b = prep.transform(fresh), restored.transform(fresh)
    assert torch.equal(a.sparse, b.sparse) and torch.equal(a.dense, b.dense)
    assert all(torch.equal(a.bags[k], b.bags[k]) for k in a.bags)
    assert restored.cardinalities == prep.cardinalities and restored.bag_sizes == prep.bag_sizes


def test_seed_feature_set(train_df: pd.DataFrame) -> None:
    prep = Preprocessor("seed").fit(train_df)
    batch = prep.transform(train_df)
    assert batch.sparse.shape == (len(train_df), 9) and batch.dense.shape == (len(train_df), 5)
    assert batch.bags == {} and prep.bag_sizes == {}
    assert list(prep.cardinalities) == list(C.SEED_SPARSE)


def test_missing_column_is_reported(prep: Preprocessor, train_df: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="age"):
        prep.transform(train_df.drop(columns=["age"]))


def test_batch_file_round_trip(prep: Preprocessor, train_df: pd.DataFrame, tmp_path) -> None:
    batch = prep.transform(train_df)
    batch.save(tmp_path / "b.pt")
    loaded = Batch.load(tmp_path / "b.pt")
    assert torch.equal(loaded.sparse, batch.sparse) and torch.equal(loaded.label, batch.label)
    part = loaded.take(torch.tensor([3, 1]))
    assert torch.equal(part.bags["history_brands"], batch.bags["history_brands"][[3, 1]])
    assert len(loaded.slice(10, 20)) == 10


def test_a_narrowed_preprocessor_equals_one_fitted_on_the_narrow_set(prep: Preprocessor, train_df: pd.DataFrame,
                                                                     tmp_path, monkeypatch) -> None:
    """`--model auto` fits and transforms once and narrows for the dense-items kind: the result
    must be what fitting that kind's preprocessing on the same rows gives."""
    monkeypatch.setattr(preprocess, "NARROW_ROWS", 7)  # the sparse rows copied in several blocks
    fitted = Preprocessor("dense-items").fit(train_df)
    narrow, keep = prep.narrowed("dense-items")
    prep.transform(train_df).save(tmp_path / "full")
    batch = preprocess.narrow_folder(tmp_path / "full", tmp_path / "narrow", keep)
    assert narrow.to_dict() == fitted.to_dict()
    expected = fitted.transform(train_df)
    assert torch.equal(batch.sparse, expected.sparse)
    assert torch.equal(batch.dense, expected.dense) and torch.equal(batch.label, expected.label)
    assert all(torch.equal(batch.bags[k], expected.bags[k]) for k in expected.bags)
    assert torch.equal(narrow.transform(train_df.head(7)).sparse, expected.sparse[:7])
    with pytest.raises(ValueError, match="fewer sparse columns"):
        prep.narrowed("seed")
