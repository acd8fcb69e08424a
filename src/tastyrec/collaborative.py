"""Collaborative inputs of the DLRM: what other customers bought, two ways.

Fitted on training rows only and frozen with the model (`ItemSimilarity`, in the preprocessor):

- `item_popularity`: the share of customers who had bought the item before the newest training
  cutoff (the same value for every customer);
- `item_knn_score`: the item's cosine similarity (over those customers' purchases) to each item
  in the customer's history bag, summed, the item itself left out: item-kNN, as an input.

Both come from the history bags of the training rows at their newest cutoff, never from labels;
evaluation and serving read the same numbers, whatever their own snapshot.

Point in time, computed by `tastyrec features` for every snapshot from every customer's history
then (`snapshot_table`, the feature view `item_collaborative`, one row per item):

- `item_recent_popularity`: the item's share of the customers who ordered in the last window
  (what sells now);
- `item_ease_score`: the item's EASE weights (Steck, "Embarrassingly Shallow Autoencoders", WWW
  2019: the ridge regression of each item's column on the others, diagonal zero, in closed form)
  from each item of the customer's history bag, summed (columns.BAG_SCORES): in SQL for training
  sets (features.training), in numpy for serving (features.online).

Why both: on Ta-Feng, whose last month before February is the Chinese New Year, the frozen
popularity and item-kNN transfer to February better than the same figures as of each snapshot,
while the point-in-time ones carry what the frozen ones cannot see on short spans (measured,
docs/model.md: "What was tried on Ta-Feng"); the network learns which to trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from tastyrec.columns import BAG_SCORES, COLLAB_ITEMS, CUSTOMER_ID, ITEM, TIMESTAMP

HISTORY = "history_items"
FEATURES = ("item_popularity", "item_knn_score")
NEEDS = (ITEM, HISTORY)  # the columns these features are computed from (fitting reads the keys too)
EASE_PENALTY = 0.5  # EASE's L2 penalty, as a share of the mean number of customers per item (diag of X'X)


@dataclass
class ItemSimilarity:
    """Item popularity and item x item cosine similarity of the customers' history bags."""

    items: list[str]
    popularity: np.ndarray  # (n_items,) share of customers who bought the item
    similarity: np.ndarray  # (n_items, n_items) cosine, zero diagonal

    def _bought(self, bags: pa.ListArray) -> sp.csr_matrix:
        """(len(bags), n_items) 0/1: which known items each bag holds."""
        lengths = pc.fill_null(pc.list_value_length(bags), 0).to_numpy(zero_copy_only=False)
        codes = pc.fill_null(pc.index_in(bags.flatten(), value_set=pa.array(self.items, pa.string())), -1)
        codes = codes.to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(len(bags)), lengths)
        known = codes >= 0
        matrix = sp.csr_matrix((np.ones(known.sum(), np.float32), (rows[known], codes[known])),
                               shape=(len(bags), len(self.items)))
        matrix.data[:] = 1.0  # an item twice in a bag still counts once
        return matrix

    @classmethod
    def fit(cls, df: pd.DataFrame) -> ItemSimilarity:
        """From the history bags of the customers at the newest timestamp of the training rows."""
        return SimilarityFit().add(df).result()

    @classmethod
    def fit_bags(cls, items: set[str], bags: pa.ListArray) -> ItemSimilarity:
        """From one history bag per customer (at the newest training timestamp) and the items of
        the training rows: what `fit` computes, for callers that read the rows in chunks."""
        items = sorted(items | set(pc.unique(pc.drop_null(bags.flatten())).to_pylist()))
        empty = cls(items, np.zeros(len(items)), np.zeros((len(items), len(items))))
        bought = empty._bought(bags)
        co = (bought.T @ bought).toarray().astype(np.float64)  # customers who bought both
        norms = np.sqrt(np.diag(co))
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.nan_to_num(co / np.outer(norms, norms))
        np.fill_diagonal(similarity, 0.0)  # the item itself is item_purchase_count's job
        popularity = np.diag(co) / max(len(bags), 1)
        # rounded as saved (to_dict), so the model trains on exactly what serving computes
        return cls(items, np.round(popularity, 6), np.round(similarity, 6))

    def features(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """item_popularity and item_knn_score of every row, from its item and its history bag
        alone (0 for items unseen in training), so a row scores the same in any frame."""
        item = pc.fill_null(pc.index_in(_strings(df[ITEM]), value_set=pa.array(self.items, pa.string())), -1)
        item = item.to_numpy(zero_copy_only=False)
        bags = pa.array(df[HISTORY], type=pa.list_(pa.string()), from_pandas=True)
        bags = bags.combine_chunks() if isinstance(bags, pa.ChunkedArray) else bags
        bought = self._bought(bags).tocoo()  # (rows, items): one entry per distinct item of a bag
        rows, history = bought.row, bought.col
        mine = item[rows]  # the row's own item, for every item in its bag
        known = mine >= 0
        knn = np.bincount(rows[known], weights=self.similarity[history[known], mine[known]], minlength=len(df))
        popularity = np.where(item >= 0, self.popularity[np.maximum(item, 0)], 0.0)
        return {"item_popularity": popularity, "item_knn_score": knn}

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "popularity": self.popularity.tolist(),
                "similarity": self.similarity.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemSimilarity:
        return cls(list(d["items"]), np.asarray(d["popularity"]), np.asarray(d["similarity"]))


def _strings(series: pd.Series) -> pa.Array:
    """A column of item names as Arrow strings (zero copy when read from Parquet); other values
    (a served row's 0 or False) as their text, as the sparse columns' encoding reads them."""
    if pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
        series = series.astype("string")
    arr = pa.array(series, type=pa.string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


class SimilarityFit:
    """`ItemSimilarity.fit` over rows that come in chunks (in any order): the items of the rows,
    and one history bag per customer at the newest timestamp seen (the rows of a customer and
    timestamp all carry the same bag)."""

    def __init__(self) -> None:
        self.items: set[str] = set()
        self.newest: pd.Timestamp | None = None
        self.parts: list[tuple[np.ndarray, pa.ListArray]] = []  # (customers, their bags) at `newest`

    def add(self, df: pd.DataFrame) -> SimilarityFit:
        if len(df) == 0:
            return self
        self.items.update(pc.unique(pc.drop_null(_strings(df[ITEM]))).to_pylist())
        newest = df[TIMESTAMP].max()
        if self.newest is None or newest > self.newest:
            self.newest, self.parts = newest, []
        if newest == self.newest:
            rows = df.loc[df[TIMESTAMP] == newest, [CUSTOMER_ID, HISTORY]].drop_duplicates(CUSTOMER_ID)
            bags = pa.array(rows[HISTORY], type=pa.list_(pa.string()), from_pandas=True)
            self.parts.append((rows[CUSTOMER_ID].to_numpy(), bags.combine_chunks()
                               if isinstance(bags, pa.ChunkedArray) else bags))
        return self

    def result(self) -> ItemSimilarity:
        customers = np.concatenate([c for c, _ in self.parts]) if self.parts else np.empty(0, np.int64)
        bags = pa.concat_arrays([b for _, b in self.parts]) if self.parts else pa.array([], pa.list_(pa.string()))
        _, first = np.unique(customers, return_index=True)  # a customer split across chunks counts once
        return ItemSimilarity.fit_bags(self.items, bags.take(pa.array(first)))


def ease_weights(co: np.ndarray, penalty: float = EASE_PENALTY) -> np.ndarray:
    """EASE's item x item weights B from X'X (`co`, customers who bought both): with
    P = (X'X + lambda I)^-1, B = -P / diag(P) column-wise and diag(B) = 0; lambda = penalty x the
    mean of diag(X'X) (at least 1), so the same share fits 4,000 customers and 200,000."""
    n = len(co)
    if n == 0:
        return np.zeros((0, 0))
    gram = co + max(penalty * float(np.mean(np.diag(co))), 1.0) * np.eye(n)
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def snapshot_table(ts: pd.Timestamp, bags: pa.ListArray, days: pa.ListArray, window_days: float) -> pa.Table:
    """The `item_collaborative` rows of one snapshot, from every customer's history bag then
    (history_items) and the days since each bag item's last purchase (history_item_days)."""
    bought = ItemSimilarity(sorted(set(pc.unique(pc.drop_null(bags.flatten())).to_pylist())), np.zeros(0), np.zeros(0))
    matrix = bought._bought(bags)  # which customer bought which item
    co = (matrix.T @ matrix).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(co))  # every item of a bag has a buyer: > 0
    cosine = co / np.outer(norms, norms) if len(co) else co
    np.fill_diagonal(cosine, 0.0)  # the item itself is item_purchase_count's job
    items = pa.array(bought.items, pa.string())
    recent = pc.less_equal(days.flatten(), window_days).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(bags)), pc.fill_null(pc.list_value_length(bags), 0).to_numpy(zero_copy_only=False))
    code = pc.index_in(bags.flatten(), value_set=items).to_numpy(zero_copy_only=False)
    active = len(np.unique(owner[recent]))  # customers who bought food in the last window
    n = len(bought.items)
    return pa.table({
        TIMESTAMP: pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        ITEM: items,
        "item_recent_popularity": pa.array(np.round(np.bincount(code[recent], minlength=n) / max(active, 1), 6)),
        COLLAB_ITEMS: pa.array([bought.items] * n, pa.list_(pa.string())),
        BAG_SCORES["item_ease_score"][0]: pa.array(list(np.round(ease_weights(co), 6).T), pa.list_(pa.float64())),
        BAG_SCORES["item_cosine_score"][0]: pa.array(list(np.round(cosine, 6).T), pa.list_(pa.float64())),
    })


def lengths(lists: pa.ListArray) -> np.ndarray:
    """(len(lists),) int64: each list's length, 0 for a null list."""
    if lists.null_count:  # a null list's slot in the offsets may span values (flatten skips them)
        return pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.diff(lists.offsets.to_numpy()).astype(np.int64)


def padded_codes(bags: pa.ListArray, vocab: pa.Array, unique: bool = False) -> np.ndarray:
    """(len(bags), longest bag) int64: each bag item's position in `vocab`, -1 where unknown and
    after the bag's end. unique: each bag's known items once, in vocab order (else bag order)."""
    counts = lengths(bags)
    codes = pc.index_in(bags.flatten(), value_set=vocab).fill_null(-1).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(bags)), counts)
    if unique:
        keep = codes >= 0
        pairs = np.unique(np.stack([owner[keep], codes[keep]]), axis=1)  # sorted by bag, then code
        owner, codes = pairs[0], pairs[1]
        counts = np.bincount(owner, minlength=len(bags))
    out = np.full((len(bags), int(counts.max(initial=0))), -1, dtype=np.int64)
    out[owner, np.arange(len(codes)) - np.repeat(np.cumsum(counts) - counts, counts)] = codes
    return out


SUM_BLOCK = 4_000_000  # terms held at once by `summed`: bounds its memory for any number of bags


def summed(weights: np.ndarray, codes: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """(bags, columns of weights): each column's weights of the bag items (`codes`, rows of
    `weights`, -1 skipped) summed in bag order, one bag item after the other (a sum over the
    first axis adds row after row), so each sum is the same whatever else is computed with it;
    with `scale` (aligned with codes), each term is weight x scale rounded to 6 decimals, as the
    SQL of training sets rounds it."""
    n_bags, width = codes.shape
    out = np.zeros((n_bags, weights.shape[1]))
    step = max(1, SUM_BLOCK // max(1, width * weights.shape[1]))
    for start in range(0, n_bags, step):
        block = codes[start:start + step].T  # (width, bags)
        terms = weights[np.maximum(block, 0)]  # (width, bags, columns)
        if scale is not None:
            terms = np.round(terms * scale[start:start + step].T[:, :, None], 6)
        terms[block < 0] = 0.0
        out[start:start + step] = terms.sum(axis=0) if width else 0.0
    return out


class BagWeights:
    """The items' collaborative lists (the item_collaborative columns of the menu, indexed by
    item) as one matrix per BAG_SCORES feature: history item x item, built once per features run."""

    def __init__(self, lists: pd.DataFrame):
        known = set()
        for keys in lists[COLLAB_ITEMS]:
            known.update(keys if keys is not None else [])
        self.items = list(lists.index)
        self.vocab = pa.array(sorted(known), pa.string())  # the history items that have weights
        position = {item: i for i, item in enumerate(self.vocab.to_pylist())}
        self.matrices = {}
        for name, (column, _) in BAG_SCORES.items():
            matrix = np.zeros((len(self.vocab), len(self.items)))  # (history item, item)
            for j, (keys, values) in enumerate(zip(lists[COLLAB_ITEMS], lists[column])):
                if keys is not None and values is not None and len(keys):
                    matrix[[position[k] for k in keys], j] = values
            self.matrices[name] = matrix

    def scores(self, bags: pa.ListArray, aligned: dict[str, pa.ListArray]) -> dict[str, np.ndarray]:
        """The BAG_SCORES of every bag (one per customer) x item, (len(bags), len(items)): the
        item's weights summed over the bag, each times ln(1 + the bag item's value in its aligned
        list) where the score has one (`aligned`: that list per bag), rounded as the SQL of
        features.training rounds them for training sets."""
        codes = padded_codes(bags, self.vocab)
        out = {}
        for name, matrix in self.matrices.items():
            by = BAG_SCORES[name][1]
            scale = None
            if by is not None:
                values = aligned[by]
                scale = np.zeros(codes.shape)
                counts = lengths(values)
                flat = values.flatten().fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
                rows = np.repeat(np.arange(len(values)), counts)
                scale[rows, np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)] = np.log1p(flat)
            out[name] = np.round(summed(matrix, codes, scale), 6)
        return out
