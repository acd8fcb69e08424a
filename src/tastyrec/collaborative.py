"""Collaborative inputs of the DLRM: what all customers bought, as of each snapshot.

`tastyrec features` computes, for every snapshot, from every customer's history bag at that
snapshot (`snapshot_table`), one row per item (the feature view `item_collaborative`):

- `item_popularity`: the share of customers who had bought the item before the snapshot;
- `item_recent_popularity`: the same among the customers who ordered in the last window (what
  sells now: seasons, new items);
- `collab_items` / `collab_knn` / `collab_ease`: for every item j, the weight with which having
  bought j predicts this item: cosine similarity (item-kNN) and EASE (Steck, "Embarrassingly
  Shallow Autoencoders", WWW 2019: the ridge regression of each item's column on the others,
  diagonal zero, in closed form). Where cosine says "bought by the same people", EASE says
  "predicted by the rest of the basket": it discounts items merely popular with everyone.

A (customer, item) row's `item_knn_score` / `item_ease_score` sum the item's weights over the
customer's history bag (columns.BAG_SCORES): in SQL for training sets (features.training), in
numpy for serving (features.online). Being point in time, a training row at cutoff c, a test row
and a serving row each see the purchases before their own snapshot, as the baselines do:
weights frozen at the first training cutoff knew a fraction of the data on short spans.

`ItemSimilarity.features` is how models trained before this computed the same inputs (from
weights frozen in their preprocessor); it is kept so that they still score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from tastyrec.columns import BAG_SCORES, COLLAB_ITEMS, ITEM, TIMESTAMP

HISTORY = "history_items"
FEATURES = ("item_popularity", "item_knn_score")  # what a model's frozen ItemSimilarity computes
# EASE's L2 penalty, as a share of the mean number of customers per item (the diagonal of X'X)
EASE_PENALTY = 0.5
NEEDS = (ITEM, HISTORY)  # the columns a frozen ItemSimilarity computes them from


@dataclass
class ItemSimilarity:
    """Item popularity and the item x item cosine and EASE weights of the customers' history bags
    at one snapshot (`fit_bags`). A model trained before the inputs were point in time holds one
    of these, frozen, in its preprocessor (`features`, `to_dict` / `from_dict`; without EASE)."""

    items: list[str]
    popularity: np.ndarray  # (n_items,) share of customers who bought the item
    similarity: np.ndarray  # (n_items, n_items) cosine, zero diagonal
    ease: np.ndarray | None = None  # (n_items, n_items) EASE weights, zero diagonal

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
    def fit_bags(cls, items: set[str], bags: pa.ListArray) -> ItemSimilarity:
        """From one history bag per customer (at one snapshot), over `items` and the bags' items."""
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
        return cls(items, np.round(popularity, 6), np.round(similarity, 6), np.round(ease_weights(co), 6))

    def features(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """item_popularity and item_knn_score of every row, from its item and its history bag
        alone (0 for items unseen in training), so a row scores the same in any frame."""
        item = pd.Index(self.items).get_indexer(df[ITEM].astype(str))
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
        return {"items": self.items, "popularity": self.popularity.tolist(), "similarity": self.similarity.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemSimilarity:
        return cls(list(d["items"]), np.asarray(d["popularity"]), np.asarray(d["similarity"]))


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
    fitted = ItemSimilarity.fit_bags(set(), bags)
    items = pa.array(fitted.items, pa.string())
    flat = bags.flatten()
    recent = pc.less_equal(days.flatten(), window_days).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(bags)), pc.fill_null(pc.list_value_length(bags), 0).to_numpy(zero_copy_only=False))
    code = pc.index_in(flat, value_set=items).to_numpy(zero_copy_only=False)
    active = len(np.unique(owner[recent]))
    bought_recently = np.bincount(code[recent], minlength=len(fitted.items))  # one entry per customer and item
    n = len(fitted.items)
    return pa.table({
        TIMESTAMP: pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        ITEM: items,
        "item_popularity": pa.array(fitted.popularity, pa.float64()),
        "item_recent_popularity": pa.array(np.round(bought_recently / max(active, 1), 6), pa.float64()),
        COLLAB_ITEMS: pa.array([fitted.items] * n, pa.list_(pa.string())),
        BAG_SCORES["item_knn_score"]: pa.array(list(fitted.similarity.T), pa.list_(pa.float64())),
        BAG_SCORES["item_ease_score"]: pa.array(list(fitted.ease.T), pa.list_(pa.float64())),
    })


Weights = dict[str, dict[str, dict[str, float]]]  # feature -> item -> history item -> weight


def weight_tables(lists: pd.DataFrame) -> Weights:
    """The items' collaborative lists (the item_collaborative columns, indexed by item) as
    lookups, built once per features run."""
    return {name: {item: dict(zip(keys if keys is not None else [], values if values is not None else []))
                   for item, keys, values in zip(lists.index, lists[COLLAB_ITEMS], lists[column])}
            for name, column in BAG_SCORES.items()}


def bag_scores(bags: list, items: list[str], weights: Weights) -> dict[str, np.ndarray]:
    """item_knn_score and item_ease_score of rows (a history bag and an item each): the item's
    weights summed over the bag (what the SQL of features.training computes for training sets)."""
    return {name: np.round([sum(table.get(item, {}).get(h, 0.0) for h in (bag if bag is not None else []))
                            for bag, item in zip(bags, items)], 6)
            for name, table in weights.items()}
