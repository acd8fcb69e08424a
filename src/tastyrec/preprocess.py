"""Preprocessing: turn a feature frame into model tensors, fitted on training rows only.

A `Preprocessor` learns, from the training frame alone,

- one ordinal vocabulary per sparse feature (index 0 = unknown, unseen or missing),
- one vocabulary per multi-hot feature (index 0 = padding, 1 = unknown item),
- a scaler per dense feature (NaN -> 0, log1p for heavy-tailed counts and amounts,
  then scikit-learn's MinMaxScaler with ``clip=True`` so values unseen in training stay in [0, 1]).

It is saved with the model as plain JSON (`to_dict` / `from_dict`) and reused unchanged at
inference: nothing is ever refitted there. `transform` is vectorised (pandas hash lookups for
sparse columns, pyarrow list flattening for bags), so a million rows take seconds.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sklearn.preprocessing import MinMaxScaler

from tastyrec import collaborative, columns as C
from tastyrec.collaborative import ItemSimilarity, SimilarityFit
from tastyrec.config import Progress
from tastyrec.parquet_rows import GROUP_KEYS, ParquetRows

PAD, UNKNOWN_ITEM = 0, 1  # reserved indices of every multi-hot vocabulary
UNKNOWN = 0  # reserved index of every sparse vocabulary

# Amounts, counts and recencies are heavy-tailed: without log1p a few big spenders squash
# everyone else into the bottom percent of the [0, 1] range.
LOG1P_DENSE: tuple[str, ...] = (
    "avg_yearly_purchase_amount", "avg_monthly_purchase_amount", "avg_weekly_purchase_amount",
    "order_count", "days_since_last_order", "item_purchase_count", "days_since_item_purchase",
    "item_recent_orders", "item_interval_days", "item_knn_score",
)


@dataclass(frozen=True)
class FeatureSet:
    """Which columns a model reads, in tensor order, and which dense ones get log1p."""

    sparse: tuple[str, ...]
    dense: tuple[str, ...]
    multi_hot: tuple[str, ...]
    log1p: tuple[str, ...]


FULL_DENSE = C.DENSE + collaborative.FEATURES  # the training set's dense columns + those fitted here
ITEM_SPARSE = ("menu_item_name", "menu_type", "truck_brand_name", "item_category", "item_subcategory")
FEATURE_SETS: dict[str, FeatureSet] = {
    "full": FeatureSet(C.SPARSE, FULL_DENSE, C.MULTI_HOT, tuple(c for c in FULL_DENSE if c in LOG1P_DENSE)),
    # Items only through their dense features (price, popularity, the customer's repeat and
    # collaborative scores), no item embeddings: what transfers when the items that sell change
    # between the training windows and now (seasons, on real data).
    "dense-items": FeatureSet(tuple(c for c in C.SPARSE if c not in ITEM_SPARSE), FULL_DENSE, C.MULTI_HOT,
                              tuple(c for c in FULL_DENSE if c in LOG1P_DENSE)),
    # The seed's 9 + 5 features with the seed's plain min-max scaling (no log1p, no bags), so the
    # baseline sees what the seed's model saw. The unknown bucket is kept: the seed crashed on
    # categories unseen in training.
    "seed": FeatureSet(C.SEED_SPARSE, C.SEED_DENSE, (), ()),
}


@dataclass
class Batch:
    """Model-ready tensors for N rows, built once and then only sliced.

    sparse: int32 (N, n_sparse); dense: float32 (N, n_dense);
    bags: name -> int32 (N, L_name) padded with 0; label: float32 (N,) or None.
    groups: None, or int64 (N,): then `bags` hold one row per group, (G, L_name), and row i's bags
    are row groups[i] of them. The rows of one customer and snapshot share their history bags;
    storing them once (`Preprocessor.transform_rows`) is what keeps full-scale training in memory.
    `inputs()` gives the model the same per-row tensors either way.
    Indices are int32 (embedding layers take them as they are): the training loop gathers random
    rows every batch, and half the bytes is most of its speed.
    """

    sparse: torch.Tensor
    dense: torch.Tensor
    bags: dict[str, torch.Tensor] = field(default_factory=dict)
    label: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.sparse.shape[0]

    def _rows(self, pick) -> Batch:
        """`pick` applied to every per-row tensor (the group bags stay shared)."""
        return Batch(
            sparse=pick(self.sparse),
            dense=pick(self.dense),
            bags=self.bags if self.groups is not None else {name: pick(bag) for name, bag in self.bags.items()},
            label=None if self.label is None else pick(self.label),
            groups=None if self.groups is None else pick(self.groups),
        )

    def take(self, index: torch.Tensor) -> Batch:
        """Rows at `index` (a gather: one copy)."""
        return self._rows(lambda t: t[index])

    def slice(self, start: int, stop: int) -> Batch:
        """Rows start:stop as views (no copy)."""
        return self._rows(lambda t: t[start:stop])

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(sparse, dense, per-row bags): the model's arguments; group bags gathered here."""
        if self.groups is None:
            return self.sparse, self.dense, self.bags
        return self.sparse, self.dense, {name: bag[self.groups] for name, bag in self.bags.items()}

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`."""
        return Batch(
            sparse=self.sparse.to(device),
            dense=self.dense.to(device),
            bags={name: bag.to(device) for name, bag in self.bags.items()},
            label=None if self.label is None else self.label.to(device),
            groups=None if self.groups is None else self.groups.to(device),
        )

    def arrays(self) -> dict[str, torch.Tensor]:
        """Every tensor by its file name in a tensor folder (see `save`)."""
        out = {"sparse": self.sparse, "dense": self.dense, "label": self.label, "groups": self.groups}
        return {k: v for k, v in out.items() if v is not None} | {BAG + name: bag for name, bag in self.bags.items()}

    def save(self, path: str | Path) -> None:
        """A folder of .npy files, one per tensor (what `load` maps and `TensorWriter` writes)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, tensor in self.arrays().items():
            np.save(path / f"{name}.npy", tensor.numpy())

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> Batch:
        """The tensors of a folder written by `save` or `TensorWriter`. mmap: the files are
        mapped (copy on write), not read, so several training processes share their pages."""
        arrays = {f.stem: torch.from_numpy(np.load(f, mmap_mode="c" if mmap else None))
                  for f in sorted(Path(path).glob("*.npy"))}
        return cls(sparse=arrays["sparse"], dense=arrays["dense"], label=arrays.get("label"),
                   groups=arrays.get("groups"),
                   bags={name.removeprefix(BAG): bag for name, bag in arrays.items() if name.startswith(BAG)})


BAG = "bag."  # the file name prefix of a bag's tensor in a tensor folder
RAW_DENSE = "dense.unscaled.npy"  # while fit_transform_rows runs: the dense columns before scaling


class TensorWriter:
    """One .npy file of a known shape, its rows written as they come: a tensor built chunk by
    chunk never has to be in memory whole (at N = 222,000 the training tensors are gigabytes)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype) -> None:
        self.path, self.shape, self.dtype, self.rows = path, shape, np.dtype(dtype), 0
        self.file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})

    def write(self, rows) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape} do not fit {self.shape} after {self.rows}")
        self.file.write(rows.data)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written of {self.shape[0]}")


def _strings(series: pd.Series) -> np.ndarray:
    """Values as an object array of str, missing values as None (so they never match a vocab)."""
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series.to_numpy(dtype=object)  # already str / None (serving rows): no conversion
    s = series.astype("string")  # ints like children_count become "2"; NaN/None become <NA>
    return s.to_numpy(dtype=object, na_value=None)


def _arrow_strings(series: pd.Series) -> pa.Array | None:
    """The column as one Arrow string array when it is one already (training rows read from
    Parquet), else None. Encoding it with Arrow's hash lookup skips the Python str objects, which
    were most of the preprocessing passes' time on the sparse columns."""
    if isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_string(series.dtype.pyarrow_dtype):
        return series.array.__arrow_array__().combine_chunks()
    return None


def _encode(values: np.ndarray, vocab: pd.Index, offset: int, missing: int) -> np.ndarray:
    """Hash lookup of each value in `vocab`: found -> position + offset, else `missing`."""
    codes = vocab.get_indexer(values)  # -1 where not found (unseen or None)
    return np.where(codes >= 0, codes + offset, missing).astype(np.int32)


def _list_array(series: pd.Series) -> pa.ListArray:
    """A column of lists / arrays of strings (None allowed) as one arrow list array."""
    arr = pa.array(series, type=pa.list_(pa.string()), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


NARROW_ROWS = 1_000_000  # rows copied at a time by narrow_folder


def narrow_folder(source: str | Path, folder: str | Path, keep: torch.Tensor) -> Batch:
    """A copy of the tensor folder `source` with only the sparse columns `keep` (see
    Preprocessor.narrowed): the other files copied as they are, the sparse rows a block at a time."""
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file in source.glob("*.npy"):
        if file.name != "sparse.npy":
            shutil.copyfile(file, folder / file.name)
    sparse = np.load(source / "sparse.npy", mmap_mode="r")
    writer = TensorWriter(folder / "sparse.npy", (len(sparse), len(keep)), sparse.dtype)
    try:
        for start in range(0, len(sparse), NARROW_ROWS):
            writer.write(sparse[start:start + NARROW_ROWS][:, keep.numpy()])
    finally:
        writer.file.close()
    writer.close()
    return Batch.load(folder)


class Preprocessor:
    """Encoders and scalers fitted on training rows; see the module docstring.

    feature_set: "full" (columns.SPARSE / DENSE / MULTI_HOT) or "seed" (the seed's 9 + 5).
    max_bag_len: cap on L, the padded width of each bag tensor.
    """

    def __init__(self, feature_set: str = "full", max_bag_len: int = 64) -> None:
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature_set {feature_set!r}; choose from {sorted(FEATURE_SETS)}")
        self.feature_set = feature_set
        self.features = FEATURE_SETS[feature_set]
        self.max_bag_len = max_bag_len
        self.vocabs: dict[str, list[str]] = {}
        self.bag_vocabs: dict[str, list[str]] = {}
        self.bag_lens: dict[str, int] = {}
        self.scaler: MinMaxScaler | None = None
        self.similarity: ItemSimilarity | None = None  # fitted when the feature set has collaborative features
        self._lookups: dict[str, pd.Index | pa.Array] = {}  # vocabularies as hash indexes, built once
        self._items_encoded: tuple[dict, dict[str, Any]] | None = None  # (item columns, _item_side of them)
        self._codes: dict[str, dict[str, int]] = {}  # sparse vocabularies as dicts (_encode_few)

    # ---- fitted facts the model config needs --------------------------------------------------
    @property
    def sparse(self) -> tuple[str, ...]:
        return self.features.sparse

    @property
    def dense(self) -> tuple[str, ...]:
        return self.features.dense

    @property
    def multi_hot(self) -> tuple[str, ...]:
        return self.features.multi_hot

    @property
    def cardinalities(self) -> dict[str, int]:
        """Embedding rows per sparse feature, unknown bucket included, in tensor order."""
        return {name: len(self.vocabs[name]) + 1 for name in self.sparse}

    @property
    def bag_sizes(self) -> dict[str, int]:
        """EmbeddingBag rows per multi-hot feature, padding and unknown included."""
        return {name: len(self.bag_vocabs[name]) + 2 for name in self.multi_hot}

    # ---- fit / transform ----------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> Preprocessor:
        """Learn vocabularies, bag width and scaling from training rows only."""
        return self.fit_chunks(lambda: [df])

    def fit_chunks(self, chunks: Callable[[], Iterable[pd.DataFrame]]) -> Preprocessor:
        """`fit` over training rows that come in chunks: `chunks()` is read twice (vocabularies,
        bags and item similarity; then the dense ranges, which need the similarity). Any split
        of the same rows into chunks gives the same fitted state."""
        self._fit_vocabularies(chunks())
        self._fit_scaler(self._dense_raw(df) for df in chunks())
        return self

    def _fit_scaler(self, parts: Iterable[np.ndarray]) -> None:
        """The scaler of the unscaled dense rows that come in `parts`, from their ranges."""
        lows, highs = zip(*[(x.min(axis=0), x.max(axis=0)) for x in parts if len(x)])
        self.scaler = _scaler(np.min(lows, axis=0), np.max(highs, axis=0))

    def _fit_vocabularies(self, chunks: Iterable[pd.DataFrame]) -> None:
        """The first pass of `fit_chunks`: vocabularies, bag widths and item similarity."""
        self._lookups, self._codes, self._items_encoded = {}, {}, None
        seen: dict[str, set[str]] = {name: set() for name in (*self.sparse, *self.multi_hot)}
        longest = dict.fromkeys(self.multi_hot, 0)
        similarity = SimilarityFit()
        for df in chunks:
            self._check_columns(df)
            for name in self.sparse:
                arrow = _arrow_strings(df[name])
                seen[name].update(df[name].astype("string").dropna().unique() if arrow is None
                                  else pc.unique(pc.drop_null(arrow)).to_pylist())
            for name in self.multi_hot:
                arr = _list_array(df[name])
                seen[name].update(pc.unique(pc.drop_null(arr.flatten())).to_pylist())
                longest[name] = max(longest[name], int(pc.max(pc.fill_null(pc.list_value_length(arr), 0)).as_py() or 0))
            if self._collaborative:
                similarity.add(df)
        self.vocabs = {name: sorted(seen[name]) for name in self.sparse}
        self.bag_vocabs = {name: sorted(seen[name]) for name in self.multi_hot}
        self.bag_lens = {name: max(1, min(n, self.max_bag_len)) for name, n in longest.items()}  # as wide as needed
        self.similarity = similarity.result() if self._collaborative else None
        self.scaler = None

    def fit_transform_rows(self, rows: ParquetRows, folder: str | Path, progress: Progress | None = None,
                           what: str = "tensors") -> Batch:
        """`fit_chunks` on the chosen rows, then `transform_rows` of them, in two passes instead
        of three: the vocabularies, then the tensors with the dense columns unscaled (float64, in
        a file beside them) and their ranges; the scaler fitted on those ranges then scales that
        file into the dense tensor, with `transform`'s arithmetic: the same tensors."""
        folder = Path(folder)
        self._fit_vocabularies(frame for _, frame in rows.chunks([*self.input_columns, *GROUP_KEYS], progress,
                                                                 "preprocessing: vocabularies"))
        self.transform_rows(rows, folder, progress, what, scaled=False)
        return self._scale_file(folder)

    def _scale_file(self, folder: Path) -> Batch:
        """Fit the scaler on the unscaled dense rows of folder/RAW_DENSE and write them scaled as
        the folder's dense tensor, a block at a time; the unscaled file goes."""
        raw, block = np.load(folder / RAW_DENSE, mmap_mode="r"), 1 << 20
        self._fit_scaler(raw[i:i + block] for i in range(0, len(raw), block))
        writer = TensorWriter(folder / "dense.npy", raw.shape, np.float32)
        try:
            for i in range(0, len(raw), block):
                writer.write(self._scaled(raw[i:i + block]))
        finally:
            writer.file.close()
        writer.close()
        del raw
        (folder / RAW_DENSE).unlink()
        return Batch.load(folder)

    def _lookup(self, name: str, arrow: bool = False) -> pd.Index | pa.Array:
        """The vocabulary of a sparse (pd.Index; arrow=True: pa.Array) or multi-hot (pa.Array)
        feature, built on first use: serving transforms a few dozen rows at a time, where
        rebuilding it would cost the most."""
        key = f"{name}/arrow" if arrow and name in self.vocabs else name
        if key not in self._lookups:
            vocab = self.vocabs[name] if name in self.vocabs else self.bag_vocabs[name]
            self._lookups[key] = pd.Index(vocab) if key in self.vocabs else pa.array(vocab, type=pa.string())
        return self._lookups[key]

    def transform(self, df: pd.DataFrame) -> Batch:
        """Encode `df` with the fitted state; unseen categories -> 0, unknown bag items -> 1."""
        batch = self._row_tensors(df)
        batch.bags = {name: torch.from_numpy(self._bag(df[name], name)) for name in self.multi_hot}
        return batch

    def transform_rows(self, rows: ParquetRows, folder: str | Path, progress: Progress | None = None,
                       what: str = "tensors", scaled: bool = True) -> Batch | None:
        """`transform` of the chosen rows of a Parquet file into a tensor folder (see Batch.save),
        a chunk at a time, each chunk's rows written as they are made; each group's bags stored
        once (see Batch.groups). Memory follows a chunk and the bags, not the rows. Returns the
        folder's tensors, mapped. scaled=False (fit_transform_rows): the dense columns unscaled,
        float64, in folder/RAW_DENSE instead, and nothing returned."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(rows)
        dense = ("dense.npy", np.float32) if scaled else (RAW_DENSE, np.float64)
        writers = {"sparse": TensorWriter(folder / "sparse.npy", (n, len(self.sparse)), np.int32),
                   "dense": TensorWriter(folder / dense[0], (n, len(self.dense)), dense[1]),
                   "label": TensorWriter(folder / "label.npy", (n,), np.float32)}
        bags = {name: np.zeros((rows.n_groups, self.bag_lens[name]), dtype=np.int32) for name in self.multi_hot}
        try:
            for group, df in rows.chunks([*self.input_columns, C.LABEL], progress, what):
                part = self._row_tensors(df, scaled)
                for name, tensor in (("sparse", part.sparse), ("dense", part.dense), ("label", part.label)):
                    writers[name].write(tensor.numpy())
                groups, first = np.unique(group, return_index=True)  # a group split across chunks is written twice
                for name in self.multi_hot:
                    bags[name][groups] = self._bag(df[name].iloc[first], name)
        finally:
            for writer in writers.values():
                writer.file.close()
        for writer in writers.values():
            writer.close()
        np.save(folder / "groups.npy", np.asarray(rows.group, dtype=np.int64))
        for name, bag in bags.items():
            np.save(folder / f"{BAG}{name}.npy", bag)
        return Batch.load(folder) if scaled else None

    def _row_tensors(self, df: pd.DataFrame, scaled: bool = True) -> Batch:
        """The per-row tensors of `df` (sparse, dense, label), without bags; scaled=False: the
        dense columns unscaled (float64), before the scaler is fitted."""
        if self.scaler is None and scaled:
            raise RuntimeError("Preprocessor is not fitted")
        self._check_columns(df)
        n = len(df)
        sparse = np.empty((n, len(self.sparse)), dtype=np.int32)  # (N, F)
        for j, name in enumerate(self.sparse):
            if (arrow := _arrow_strings(df[name])) is None:
                sparse[:, j] = _encode(_strings(df[name]), self._lookup(name), offset=1, missing=UNKNOWN)
            else:  # the same codes: position + 1 in the vocabulary, UNKNOWN where not in it (or null)
                found = pc.fill_null(pc.index_in(arrow, value_set=self._lookup(name, arrow=True)), -1).to_numpy()
                sparse[:, j] = np.where(found >= 0, found + 1, UNKNOWN)
        label = None
        if C.LABEL in df.columns:
            label = torch.from_numpy(df[C.LABEL].to_numpy(dtype=np.float32))  # (N,)
        raw = self._dense_raw(df)
        return Batch(sparse=torch.from_numpy(sparse), dense=torch.from_numpy(self._scaled(raw) if scaled else raw),
                     label=label)

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        """MinMaxScaler.transform's arithmetic (x * scale + min, clipped), without its input
        checks: (N, n_dense) float32."""
        dense = raw * self.scaler.scale_ + self.scaler.min_
        return np.clip(dense, *self.scaler.feature_range).astype(np.float32)

    def transform_pairs(self, pairs) -> Batch:
        """`transform` of the frame that `pairs` (features.online.Pairs) makes, without building
        it: each column encoded once at the level it varies at (the item side once per features
        run) and then gathered to the rows; the customers' bags stored once (Batch.groups)."""
        if self.scaler is None:
            raise RuntimeError("Preprocessor is not fitted")
        side = self._item_side(pairs.item_columns)
        n = len(pairs)
        sparse = np.empty((n, len(self.sparse)), dtype=np.int32)  # (N, F)
        for j, name in enumerate(self.sparse):
            if name in side:
                sparse[:, j] = side[name][pairs.item]
            else:
                sparse[:, j] = self._encode_few(pairs.customer_column(name), name)[pairs.customer]
        derived = {}
        if self._collaborative:
            codes = collaborative.padded_codes(pairs.customer_column(collaborative.HISTORY), side["similar items"], unique=True)
            knn = collaborative.summed(side["knn weights"], codes)  # (customers, items)
            derived = {"item_popularity": side["popularity"][pairs.item], "item_knn_score": knn[pairs.customer, pairs.item]}
        raw = self._dense_values(lambda name: derived[name] if name in derived else pairs.column(name), n)
        groups = torch.from_numpy(np.asarray(pairs.customer, dtype=np.int64))
        bags = {name: torch.from_numpy(self._bag(pairs.customer_column(name), name)) for name in self.multi_hot}
        return Batch(sparse=torch.from_numpy(sparse), dense=torch.from_numpy(self._scaled(raw)), bags=bags, groups=groups)

    def _encode_few(self, values: np.ndarray, name: str) -> np.ndarray:
        """`_encode` of a sparse column for a few rows (one request's customers): a dict lookup
        where the values are str or None, as they come from the online store."""
        if values.dtype != object or not all(v is None or type(v) is str for v in values):
            return _encode(_strings(pd.Series(values)), self._lookup(name), offset=1, missing=UNKNOWN)
        if name not in self._codes:
            self._codes[name] = {value: code for code, value in enumerate(self.vocabs[name], start=1)}
        codes = self._codes[name]
        return np.fromiter((codes.get(v, UNKNOWN) for v in values), dtype=np.int32, count=len(values))

    def _item_side(self, item_columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """What the rows read from their item, encoded once per features run (the dict of item
        columns is the key): each item sparse column's codes and the collaborative item side."""
        cached = self._items_encoded
        if cached is not None and cached[0] is item_columns:
            return cached[1]
        side: dict[str, Any] = {name: _encode(_strings(pd.Series(item_columns[name])), self._lookup(name), 1, UNKNOWN)
                                for name in self.sparse if name in item_columns}
        if self._collaborative:
            position = pd.Index(self.similarity.items).get_indexer(item_columns[C.ITEM])  # -1: unseen in training
            known = position >= 0
            side["popularity"] = np.where(known, self.similarity.popularity[np.maximum(position, 0)], 0.0)
            side["knn weights"] = self.similarity.similarity[:, np.maximum(position, 0)] * known  # (history item, item)
            side["similar items"] = pa.array(self.similarity.items, pa.string())
        self._items_encoded = (item_columns, side)
        return side

    def fit_transform(self, df: pd.DataFrame) -> Batch:
        return self.fit(df).transform(df)

    def narrowed(self, feature_set: str) -> tuple[Preprocessor, torch.Tensor]:
        """This fitted preprocessor for a feature set that reads fewer sparse columns and the same
        dense and multi-hot ones (e.g. "dense-items" from "full"), and the positions of its sparse
        columns among this one's: tensors transformed by this one, with only those sparse columns,
        are what fitting and transforming the same rows again would give (see `narrow_folder`).
        `--model auto` prepares its kinds this way."""
        features = FEATURE_SETS[feature_set]
        same = (features.dense, features.multi_hot, features.log1p) == (self.dense, self.multi_hot, self.features.log1p)
        if not same or not set(features.sparse) <= set(self.sparse):
            raise ValueError(f"feature set {feature_set!r} is not {self.feature_set!r} with fewer sparse columns")
        narrow = Preprocessor.from_dict(self.to_dict() | {"feature_set": feature_set,
                                                          "features": dataclasses.asdict(features)})
        narrow.vocabs = {name: self.vocabs[name] for name in features.sparse}
        return narrow, torch.tensor([self.sparse.index(name) for name in features.sparse], dtype=torch.long)

    @property
    def _collaborative(self) -> tuple[str, ...]:
        """The dense features computed here by ItemSimilarity (not columns of the frame)."""
        return tuple(c for c in self.dense if c in collaborative.FEATURES)

    @property
    def input_columns(self) -> list[str]:
        """The columns `transform` reads, each once (the collaborative features are computed from
        the item and the history bag)."""
        needs = collaborative.NEEDS if self._collaborative else ()
        cols = [*self.sparse, *(c for c in self.dense if c not in self._collaborative), *self.multi_hot, *needs]
        return list(dict.fromkeys(cols))

    def _check_columns(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise KeyError(f"frame lacks feature columns {missing}")

    def _dense_raw(self, df: pd.DataFrame) -> np.ndarray:
        """Dense columns as float64 (N, n_dense), NaN -> 0, log1p where heavy-tailed."""
        derived = self.similarity.features(df) if self._collaborative else {}
        return self._dense_values(lambda name: derived[name] if name in derived
                                  else df[name].to_numpy(dtype=np.float64, na_value=np.nan), len(df))

    def _dense_values(self, column: Callable[[str], np.ndarray], n: int) -> np.ndarray:
        """(n, n_dense) float64 of `column(name)` for every dense column, NaN -> 0, log1p where heavy-tailed."""
        x = np.empty((n, len(self.dense)), dtype=np.float64)
        for j, name in enumerate(self.dense):
            x[:, j] = column(name)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        for j, name in enumerate(self.dense):
            if name in self.features.log1p:
                x[:, j] = np.log1p(np.clip(x[:, j], 0.0, None))  # counts/amounts are >= 0
        return x

    def _bag(self, series: pd.Series | pa.ListArray, name: str) -> np.ndarray:
        """One multi-hot column as int32 (N, L): vocab index + 2, 1 if unknown, 0 padding.

        Vectorised: flatten every list into one array, encode it once, and scatter each value
        to (row, position-in-row); positions past L are dropped (the cap).
        """
        arr = series if isinstance(series, pa.ListArray) else _list_array(series)
        n, width = len(arr), self.bag_lens[name]
        lengths = collaborative.lengths(arr)
        flat = arr.flatten()  # values of non-null lists only, in row order
        # Arrow's hash lookup on the flat strings; null where unknown (or a null element).
        found = pc.index_in(flat, value_set=self._lookup(name))
        codes = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        codes = np.where(codes >= 0, codes + 2, UNKNOWN_ITEM)
        rows = np.repeat(np.arange(n), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = np.arange(len(codes)) - starts
        keep = pos < width
        out = np.full((n, width), PAD, dtype=np.int32)
        out[rows[keep], pos[keep]] = codes[keep]
        return out

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (saved next to the model weights)."""
        if self.scaler is None:
            raise RuntimeError("Preprocessor is not fitted")
        return {
            "feature_set": self.feature_set,
            "features": dataclasses.asdict(self.features),
            "max_bag_len": self.max_bag_len,
            "bag_lens": self.bag_lens,
            "vocabs": self.vocabs,
            "bag_vocabs": self.bag_vocabs,
            "dense_min": self.scaler.data_min_.tolist(),
            "dense_max": self.scaler.data_max_.tolist(),
            "similarity": self.similarity.to_dict() if self.similarity else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        """Rebuild exactly the fitted preprocessor that `to_dict` described."""
        prep = cls(d["feature_set"], max_bag_len=d["max_bag_len"])
        # The saved column lists win over today's FEATURE_SETS: they are what the model was fed.
        prep.features = FeatureSet(**{k: tuple(v) for k, v in d["features"].items()})
        prep.bag_lens = dict(d["bag_lens"])
        prep.vocabs = {k: list(v) for k, v in d["vocabs"].items()}
        prep.bag_vocabs = {k: list(v) for k, v in d["bag_vocabs"].items()}
        prep.similarity = ItemSimilarity.from_dict(d["similarity"]) if d.get("similarity") else None
        prep.scaler = _scaler(d["dense_min"], d["dense_max"])
        return prep


def _scaler(low, high) -> MinMaxScaler:
    """The MinMaxScaler fitted on rows whose column minima and maxima are `low` and `high`:
    fitting it on the two rows [low, high] gives exactly its data_min_, scale_ and min_."""
    return MinMaxScaler(feature_range=(0.0, 1.0), clip=True).fit(np.array([low, high], dtype=np.float64))


def synthetic_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """A random frame with the column contract and a learnable label, for tests and benchmarks.

    Not Tasty Bytes data (that comes from the warehouse generator): just the right columns,
    dtypes, missing values and a planted signal (item x favourite brand, history, price).
    """
    rng = np.random.default_rng(seed)
    n_items, n_brands = 60, 15
    items = np.array([f"item_{i:02d}" for i in range(n_items)], dtype=object)
    brands = np.array([f"brand_{b:02d}" for b in range(n_brands)], dtype=object)
    item_idx = rng.integers(0, n_items, n)
    brand_of_item = item_idx % n_brands
    fav = rng.integers(0, n_brands, n)
    hist_len = rng.integers(0, 12, n)
    hist = rng.integers(0, n_items, (n, 12))
    in_hist = (hist == item_idx[:, None]) & (np.arange(12)[None, :] < hist_len[:, None])
    price = rng.uniform(2.0, 20.0, n)
    logit = 2.0 * (brand_of_item == fav) + 1.5 * in_hist.any(axis=1) - 0.15 * price + 0.5
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    def pick(values: list[str]) -> np.ndarray:
        return np.array(values, dtype=object)[rng.integers(0, len(values), n)]

    frame = {
        C.CUSTOMER_ID: np.arange(n, dtype=np.int64),  # one row per customer: each row has its own history
        C.TIMESTAMP: pd.Timestamp("2022-10-02", tz="UTC"),
        C.ITEM: items[item_idx],
        "menu_type": np.array([f"type_{b}" for b in range(n_brands)], dtype=object)[brand_of_item],
        "truck_brand_name": brands[brand_of_item],
        "item_category": pick(["Main", "Snack", "Dessert"]),
        "item_subcategory": pick(["Hot Option", "Cold Option", "Warm Option"]),
        "city": pick([f"city_{c}" for c in range(30)]),
        "country": pick([f"country_{c}" for c in range(15)]),
        "gender": pick(["Male", "Female", "Undisclosed"]),
        "marital_status": pick(["Single", "Married", "Divorced", "Undisclosed"]),
        "favourite_brand": brands[fav],
        "children_count": pick(["0", "1", "2", "3", "4", "5+", "Undisclosed"]),
        "sale_price_usd": price,
        "age": rng.integers(18, 80, n).astype(np.float64),
        "avg_yearly_purchase_amount": rng.lognormal(5.0, 1.0, n),
        "avg_monthly_purchase_amount": rng.lognormal(3.0, 1.0, n),
        "avg_weekly_purchase_amount": rng.lognormal(1.5, 1.0, n),
        "order_count": rng.poisson(8, n).astype(np.float64),
        "days_since_last_order": rng.exponential(30.0, n),
        "item_purchase_count": in_hist.sum(axis=1).astype(np.float64),
        "days_since_item_purchase": np.where(in_hist.any(axis=1), rng.exponential(60.0, n), 3650.0),
        "brand_spend_share": rng.random(n),
        "item_recent_orders": in_hist.sum(axis=1) * rng.random(n),
        "item_interval_days": np.where(in_hist.sum(axis=1) > 1, rng.exponential(40.0, n), 2000.0),
        "item_order_share": np.where(in_hist.any(axis=1), rng.random(n), 0.0),
        "item_basket_decay": np.where(in_hist.any(axis=1), rng.random(n), 0.0),
        "item_last_baskets": np.where(in_hist.any(axis=1), rng.random(n), 0.0),
        "item_recent_popularity": rng.random(n),
        "item_ease_score": rng.normal(0.0, 0.1, n),
        "item_cosine_score": rng.exponential(0.5, n),
    }
    df = pd.DataFrame(frame)
    df.loc[rng.random(n) < 0.02, "age"] = np.nan  # the real data has missing ages
    df["history_items"] = [items[h[:k]] for h, k in zip(hist, hist_len)]
    df["history_brands"] = [np.unique(brands[h[:k] % n_brands]) for h, k in zip(hist, hist_len)]
    df[C.LABEL] = label
    return df
