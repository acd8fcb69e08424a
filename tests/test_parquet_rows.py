"""Bounded-memory training data: rows read from Parquet in chunks, history bags stored once per
customer and snapshot. The chunked path must give the model exactly what reading the whole
frame gave (the path before it), and the same weights after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from tastyrec.columns import CUSTOMER_ID, LABEL, TIMESTAMP
from tastyrec.config import Workspace
from tastyrec.model import MODEL_KINDS, model_config
from tastyrec.parquet_rows import ParquetRows
from tastyrec.preprocess import Batch, Preprocessor
from tastyrec.train import TrainConfig, train


def _train_path(ws: Workspace) -> Path:
    return ws.home / "datasets" / "time" / "train.parquet"


def _whole_frame_buyers(path: Path) -> pd.DataFrame:
    """The path before chunking: the whole file read at once, then the rows of the (customer,
    snapshot) pairs with a purchase."""
    frame = pd.read_parquet(path, dtype_backend="pyarrow")
    bought = frame.groupby([CUSTOMER_ID, TIMESTAMP], sort=False, observed=True)[LABEL].transform("max")
    return frame[bought.to_numpy(dtype=float) > 0].reset_index(drop=True)


def _fit_chunked(rows: ParquetRows) -> Preprocessor:
    return Preprocessor("full").fit_chunks(lambda: (frame for _, frame in rows.chunks()))


def _train(batch: Batch, prep: Preprocessor, tmp: Path) -> dict[str, torch.Tensor]:
    tmp.mkdir()
    batch.save(tmp / "train.pt")
    batch.slice(0, 500).save(tmp / "val.pt")
    kind = MODEL_KINDS["dlrm"]
    config = TrainConfig(train_path=str(tmp / "train.pt"), val_path=str(tmp / "val.pt"), checkpoint_dir=str(tmp),
                         model_kind="dlrm", epochs=2, batch_size=512, lr=kind.lr, progress=False,
                         model_config=model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense)))
    return train(config).state_dict


def test_chunked_rows_give_the_whole_frames_tensors_and_weights(trained_ws: Workspace, tmp_path: Path) -> None:
    path = _train_path(trained_ws)
    whole = _whole_frame_buyers(path)
    before = Preprocessor("full").fit(whole)
    expected = before.transform(whole)

    # 997 rows per chunk: the file is read in several chunks and groups straddle their borders
    rows = ParquetRows.open(path, buyers_only=True, chunk_rows=997)
    assert len(rows) == len(whole) > 3 * 997
    after = _fit_chunked(rows)
    assert after.to_dict() == before.to_dict()
    batch = after.transform_rows(rows, tmp_path / "tensors")
    for name in ("sparse", "dense", "label"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)), name
    # what training runs: the fit's second pass and the transform in one (the dense ranges from the
    # unscaled tensor), the same state and tensors, the unscaled file gone
    fused = Preprocessor("full")
    written = fused.fit_transform_rows(rows, tmp_path / "fused")
    assert fused.to_dict() == before.to_dict()
    for name in ("sparse", "dense", "label", "groups"):
        assert torch.equal(getattr(written, name), getattr(batch, name)), name
    assert all(torch.equal(written.bags[name], bag) for name, bag in batch.bags.items())
    assert sorted(p.name for p in (tmp_path / "fused").iterdir()) == sorted(p.name for p in (tmp_path / "tensors").iterdir())
    sparse, dense, bags = batch.inputs()
    for name, bag in expected.bags.items():
        assert torch.equal(bags[name], bag), name
        # stored once per (customer, snapshot): far fewer rows than the training rows
        assert batch.bags[name].shape[0] == rows.n_groups < len(rows) / 5

    a = _train(expected, before, tmp_path / "whole")
    b = _train(batch, after, tmp_path / "chunked")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_sample_keeps_file_order_and_buyers_are_chosen_among_it(trained_ws: Workspace) -> None:
    path = _train_path(trained_ws)
    keys = pq.read_table(path, columns=[CUSTOMER_ID, TIMESTAMP, LABEL]).to_pandas()
    sample = ParquetRows.open(path, max_samples=1000, seed=3)
    assert len(sample) == int(sample.keep.sum()) == 1000
    assert np.array_equal(sample.keep, ParquetRows.open(path, max_samples=1000, seed=3).keep)
    assert not np.array_equal(sample.keep, ParquetRows.open(path, max_samples=1000, seed=4).keep)
    chosen = keys[sample.keep]
    got = pd.concat([frame for _, frame in sample.chunks([CUSTOMER_ID, TIMESTAMP, LABEL])], ignore_index=True)
    assert got[CUSTOMER_ID].tolist() == chosen[CUSTOMER_ID].tolist()  # file order, not draw order

    buyers = ParquetRows.open(path, max_samples=1000, seed=3, buyers_only=True)
    assert buyers.keep.sum() < 1000 and not (buyers.keep & ~sample.keep).any()
    kept = keys[buyers.keep]
    assert (kept.groupby([CUSTOMER_ID, TIMESTAMP])[LABEL].max() > 0).all()
    # every drawn row of a group with a drawn purchase is kept
    drawn_groups = chosen.groupby([CUSTOMER_ID, TIMESTAMP])[LABEL].max()
    assert len(kept) == int(chosen.set_index([CUSTOMER_ID, TIMESTAMP]).index.isin(
        drawn_groups[drawn_groups > 0].index).sum())
    # groups are numbered by first appearance, one number per (customer, snapshot)
    assert buyers.group[0] == 0 and buyers.n_groups == kept.groupby([CUSTOMER_ID, TIMESTAMP]).ngroups
