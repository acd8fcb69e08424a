"""Baselines the DLRM is compared with, and the oracle.

Every baseline is fitted on the history before the cutoff and scores the candidate frame of
the test window (one row per customer x item), returning one float per candidate row in the
same order. Scores are only comparable within a customer (they are not probabilities), so
evaluate them with `metrics.evaluate_scores(..., probabilities=False)`.

Inputs:
- `history`: CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT (times bought before the cutoff; rows with 0
  are allowed and ignored) and ITEM_RECENT_ORDERS (the same orders weighted by recency; only the
  recency-aware repeat baseline reads it).
- `customers`: CUSTOMER_ID, CITY (customer attributes; only the city-popularity baseline
  reads them).
- `candidates`: CUSTOMER_ID, ITEM. Customers or items absent from the history get the
  baseline's "know nothing" score (0, or the global popularity for an unknown city).

Food-truck data is repeat-heavy: the best single signal for "will buy item i" is "bought i
often before". Item-kNN keeps the item's similarity to itself (`include_self=True`) so that
signal enters its score; see `ItemKNN`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, ITEM_PURCHASE_COUNT, ITEM_RECENT_ORDERS

# Column names these frames need that columns.py does not define (yet). Move them there
# when another stage produces these columns, and import them here instead.
PROPENSITY = "propensity"  # the generator's true purchase probability (synth schema)


@dataclass(frozen=True)
class Interactions:
    """The history as a customer x item matrix of purchase counts, with its index maps."""

    matrix: sp.csr_matrix  # (n_customers, n_items) float32 counts
    customers: pd.Index  # row i of `matrix` is customers[i]
    items: pd.Index  # column j of `matrix` is items[j]

    @classmethod
    def from_history(cls, history: pd.DataFrame) -> Interactions:
        """Build the matrix from positive-count history rows (duplicates are summed)."""
        bought = history.loc[history[ITEM_PURCHASE_COUNT] > 0]
        rows, customers = pd.factorize(bought[CUSTOMER_ID], sort=True)
        cols, items = pd.factorize(bought[ITEM], sort=True)
        counts = bought[ITEM_PURCHASE_COUNT].to_numpy(dtype=np.float32)
        # coo -> csr sums duplicate (customer, item) rows, which is what counts should do.
        matrix = sp.coo_matrix(
            (counts, (rows, cols)), shape=(len(customers), len(items))
        ).tocsr()
        return cls(matrix, pd.Index(customers), pd.Index(items))

    def codes(self, candidates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each candidate in `matrix`; -1 where unknown."""
        return (
            self.customers.get_indexer(candidates[CUSTOMER_ID]),
            self.items.get_indexer(candidates[ITEM]),
        )


def _lookup(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """table[rows, cols] as float64, with 0.0 where a row or column code is -1 (unknown)."""
    known = (rows >= 0) & (cols >= 0)
    out = np.zeros(len(rows), dtype=np.float64)
    out[known] = table[rows[known], cols[known]]
    return out


class Baseline(Protocol):
    """What every baseline offers: fit on the history, then score candidate rows."""

    name: ClassVar[str]  # the key in score_all's result and in reports

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> Self:
        """Learn from the history before the cutoff (and customer attributes)."""
        ...

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """One score per candidate row, in row order; higher ranks first."""
        ...


@dataclass
class GlobalPopularity:
    """Share of the history's customers who bought the item (same for every customer)."""

    name: ClassVar[str] = "popularity"
    share: pd.Series = field(init=False, repr=False)  # item -> share, set by fit

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> GlobalPopularity:
        """Count distinct buyers per item; `customers` is unused."""
        self.share = _item_share(history)
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """The item's share for every candidate row; 0 for items never bought."""
        codes = self.share.index.get_indexer(candidates[ITEM])
        return np.where(codes >= 0, self.share.to_numpy()[codes], 0.0)


def _item_share(history: pd.DataFrame) -> pd.Series:
    """Per item: distinct buyers / distinct customers in the history."""
    n_customers = history[CUSTOMER_ID].nunique()
    bought = history.loc[history[ITEM_PURCHASE_COUNT] > 0]
    buyers = bought.groupby(ITEM)[CUSTOMER_ID].nunique()
    return (buyers / max(n_customers, 1)).astype(np.float64)


@dataclass
class CityPopularity:
    """Share of the customer's city who bought the item, shrunk towards the global share.

    share = (buyers in city + prior_weight * global share) / (customers in city + prior_weight)

    The shrinkage keeps small cities from ranking by a handful of customers, and it is the
    fallback: a city with no customers in the history (or a customer without a city) gets
    exactly the global share.
    """

    prior_weight: float = 10.0
    name: ClassVar[str] = "city_popularity"
    global_share: pd.Series = field(init=False, repr=False)  # item -> share
    city_of: pd.Series = field(init=False, repr=False)  # customer -> city
    cities: pd.Index = field(init=False, repr=False)  # rows of `table`
    table: np.ndarray = field(init=False, repr=False)  # (n_cities, n_items) city shares

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> CityPopularity:
        """Count distinct buyers per (city, item) and customers per city."""
        self.global_share = _item_share(history)
        self.city_of = customers.drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)[CITY]
        with_city = history.assign(**{CITY: history[CUSTOMER_ID].map(self.city_of)})
        city_size = with_city.groupby(CITY)[CUSTOMER_ID].nunique()  # customers per city
        bought = with_city.loc[with_city[ITEM_PURCHASE_COUNT] > 0]
        # (n_cities, n_items) distinct buyers; 0 where nobody in the city bought the item.
        buyers = (
            bought.groupby([CITY, ITEM])[CUSTOMER_ID].nunique()
            .unstack(ITEM)
            .reindex(index=city_size.index, columns=self.global_share.index)
            .fillna(0.0)
            .to_numpy()
        )
        prior = self.prior_weight * self.global_share.to_numpy()[np.newaxis, :]
        self.cities = city_size.index
        self.table = (buyers + prior) / (city_size.to_numpy()[:, np.newaxis] + self.prior_weight)
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """The city share where the city is known, the global share otherwise."""
        items = self.global_share.index.get_indexer(candidates[ITEM])
        cities = self.cities.get_indexer(candidates[CUSTOMER_ID].map(self.city_of))
        out = np.where(items >= 0, self.global_share.to_numpy()[items], 0.0)
        in_city = (cities >= 0) & (items >= 0)
        out[in_city] = self.table[cities[in_city], items[in_city]]
        return out


@dataclass
class ItemKNN:
    """Item co-occurrence: cosine similarity between items over customers (item-kNN).

    score(u, i) = sum_j w(u, j) * cos(j, i), with w(u, j) = log1p(count of j bought by u) and
    cos computed on the binary customer x item matrix (who bought what, so heavy buyers do not
    dominate the similarity).

    `include_self=True` keeps cos(i, i) = 1, which adds w(u, i) to the score of an item the
    customer already bought: the more often they bought it, the higher it ranks. On
    repeat-heavy food-truck data that is what wins the overall ranking; classic item-kNN
    (`include_self=False`) scores a favourite item only by its neighbours and ranks
    never-bought items above it. The self term is 0 for an item the customer never bought,
    so the two variants rank new items identically and the `new_` metrics do not depend on it.
    """

    include_self: bool = True
    name: ClassVar[str] = "item_knn"
    interactions: Interactions = field(init=False, repr=False)
    similarity: np.ndarray = field(init=False, repr=False)  # (n_items, n_items) cosine

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> ItemKNN:
        """Item x item cosine similarity; `customers` is unused."""
        self.interactions = Interactions.from_history(history)
        bought = (self.interactions.matrix > 0).astype(np.float64)  # (n_customers, n_items)
        co = (bought.T @ bought).toarray()  # (n_items, n_items) customers who bought both
        norms = np.sqrt(np.diag(co))  # every item in the history has >= 1 buyer, so > 0
        self.similarity = co / np.outer(norms, norms)
        if not self.include_self:
            np.fill_diagonal(self.similarity, 0.0)
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """Sum of the candidate item's similarities to the customer's items."""
        rows, cols = self.interactions.codes(candidates)
        weights = self.interactions.matrix.log1p()  # (n_customers, n_items) sparse
        # Only the customers asked about: memory stays (candidate customers, n_items).
        wanted = np.unique(rows[rows >= 0])
        scores = np.asarray(weights[wanted] @ self.similarity)  # (len(wanted), n_items)
        local = np.where(rows >= 0, np.searchsorted(wanted, rows), -1)
        return _lookup(scores, local, cols)


@dataclass
class ImplicitALS:
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) via `implicit`.

    Confidence c(u, i) = 1 + alpha * log1p(count): log damps heavy repeaters, and the 1 keeps
    every purchase at least as confident as a non-purchase (implicit weighs unobserved pairs
    with 1). score = user factors . item factors. Fitting is single-threaded, with BLAS
    limited to one thread too, and seeded, so the same history gives the same scores.

    With ~55 items, 32 factors come close to memorising each customer's history: strong on
    repeat purchases, weak on items a customer never bought (on a simulated repeat-heavy
    menu, 8 factors roughly doubled new-item recall@10 and lost a little overall recall).
    """

    factors: int = 32
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 10.0
    random_state: int = 0
    name: ClassVar[str] = "als"
    interactions: Interactions = field(init=False, repr=False)
    user_factors: np.ndarray = field(init=False, repr=False)  # (n_customers, factors)
    item_factors: np.ndarray = field(init=False, repr=False)  # (n_items, factors)

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> ImplicitALS:
        """Factorise the confidence matrix; `customers` is unused."""
        # Imported here: implicit is heavy and only this baseline needs it.
        from implicit.cpu.als import AlternatingLeastSquares

        self.interactions = Interactions.from_history(history)
        confidence = self.interactions.matrix.log1p() * self.alpha
        confidence.data += 1.0  # only stored entries: unobserved pairs stay implicit
        # implicit warns (and slows down) when BLAS runs its own thread pool; one thread
        # also keeps the floating-point reductions in a fixed order.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=1,
            )
            model.fit(confidence.astype(np.float32).tocsr(), show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """Dot product of the customer's and the item's factors; 0 when either is unknown."""
        rows, cols = self.interactions.codes(candidates)
        # A menu has ~100 items, so the full table is small: (n_customers, n_items).
        scores = self.user_factors @ self.item_factors.T
        return _lookup(scores, rows, cols)


@dataclass
class Repeat:
    """Each customer's own most-bought items, then global popularity ("personal top frequency").

    score = the customer's count of the item + popularity / 2: counts are whole numbers and the
    popularity share is at most 1, so the count orders the items, popularity breaks ties and ranks
    everything for a customer with no history. On real purchase data this simple count is the
    baseline that published next-basket models most often lose to (Li et al., TOIS 2023).
    `count_column` picks the count: ITEM_PURCHASE_COUNT, or the recency-weighted one (`RecentRepeat`).
    """

    count_column: str = ITEM_PURCHASE_COUNT
    name: ClassVar[str] = "repeat"
    counts: Interactions = field(init=False, repr=False)
    popularity: GlobalPopularity = field(init=False, repr=False)

    def fit(self, history: pd.DataFrame, customers: pd.DataFrame) -> Self:
        """The customer x item counts and the items' popularity; `customers` is unused."""
        self.popularity = GlobalPopularity().fit(history, customers)
        counts = history[[CUSTOMER_ID, ITEM, self.count_column]].rename(
            columns={self.count_column: ITEM_PURCHASE_COUNT})
        self.counts = Interactions.from_history(counts)
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        rows, cols = self.counts.codes(candidates)
        own = _lookup(self.counts.matrix.toarray(), rows, cols)  # (customers, items): a menu is small
        # ties below a whole order: a recency-weighted count can differ by less than 1
        tie_break = 1.0 if self.count_column == ITEM_PURCHASE_COUNT else 1e-3
        return own + tie_break * self.popularity.score(candidates) / 2


@dataclass
class RecentRepeat(Repeat):
    """`Repeat` with each past order weighted by its recency (ITEM_RECENT_ORDERS: exp(-age /
    window length) summed), so what the customer bought lately ranks above old habits."""

    count_column: str = ITEM_RECENT_ORDERS
    name: ClassVar[str] = "repeat_recent"


BASKET = "order_id"  # a basket is one order
ORDERED_AT = "order_ts"


def tifu_vectors(baskets: pd.DataFrame, rb: float, rg: float, m: int) -> tuple[pd.Index, pd.Index, sp.csr_matrix]:
    """TIFU-KNN's user vectors (Hu et al., SIGIR 2020): (customers, items, (n_customers, n_items)).

    `baskets`: CUSTOMER_ID, BASKET, ORDERED_AT, ITEM, one row per item line. Each of a customer's T
    baskets (oldest first, t = 0..T-1) is a binary item vector weighted rb^(T-1-t); the baskets are
    split into G = min(m, T) consecutive groups as equal as can be (the first T mod G groups one
    basket larger, as numpy.array_split does); the user vector is the mean over the groups of
    rg^(G-1-j) x the group's mean basket vector (group j = 0..G-1, oldest first).
    """
    lines = baskets.drop_duplicates([CUSTOMER_ID, BASKET, ITEM])  # binary: an item once per basket
    order = (baskets[[CUSTOMER_ID, BASKET, ORDERED_AT]].drop_duplicates([CUSTOMER_ID, BASKET])
             .sort_values([CUSTOMER_ID, ORDERED_AT, BASKET], kind="stable"))
    t = order.groupby(CUSTOMER_ID).cumcount().to_numpy()  # position of the basket, oldest first
    size = order.groupby(CUSTOMER_ID)[BASKET].transform("size").to_numpy()  # T
    groups = np.minimum(m, size)  # G
    q, r = size // groups, size % groups  # group sizes: r groups of q + 1, then groups of q
    big = r * (q + 1)  # baskets in the larger groups
    j = np.where(t < big, t // (q + 1), r + (t - big) // np.maximum(q, 1))
    members = np.where(j < r, q + 1, q)  # baskets in basket t's group
    weight = rb ** (size - 1 - t) * rg ** (groups - 1 - j) / (members * groups)
    weights = pd.Series(weight, index=pd.MultiIndex.from_frame(order[[CUSTOMER_ID, BASKET]]))
    w = weights.reindex(pd.MultiIndex.from_frame(lines[[CUSTOMER_ID, BASKET]])).to_numpy()
    rows, customers = pd.factorize(lines[CUSTOMER_ID], sort=True)
    cols, items = pd.factorize(lines[ITEM], sort=True)
    vectors = sp.coo_matrix((w, (rows, cols)), shape=(len(customers), len(items))).tocsr()  # sums duplicates
    return pd.Index(customers), pd.Index(items), vectors


def tifu_neighbours(vectors: np.ndarray, ks: Iterable[int]) -> dict[int, np.ndarray]:
    """k -> (n_customers, min(k, n - 1)): each customer's k nearest other customers (Euclidean),
    for each k of `ks` from one search (the k nearest are the first k of the largest k's)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(vectors)
    ks = sorted({min(k, n - 1) for k in ks})
    found = NearestNeighbors(n_neighbors=ks[-1] + 1, algorithm="brute").fit(vectors).kneighbors(
        vectors, return_distance=False)  # (n, k + 1), nearest first, usually self first
    out = {}
    for k in ks:
        first = found[:, :k + 1]
        is_self = first == np.arange(n)[:, None]
        # drop self where it was found (equal vectors may put it anywhere), else the farthest
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
        keep = np.ones_like(first, dtype=bool)
        keep[np.arange(n), drop] = False
        out[k] = first[keep].reshape(n, k)
    return out


def neighbour_mean(vectors: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(n_customers, n_items): the mean vector of each customer's neighbours (rows of `neighbours`),
    as one sparse product (gathering n x k vectors first would hold n x k x n_items numbers)."""
    n, k = neighbours.shape
    pick = sp.csr_matrix((np.full(n * k, 1.0 / k), neighbours.ravel(), np.arange(0, n * k + 1, k)),
                         shape=(n, len(vectors)))
    return pick @ vectors


@dataclass
class TifuKNN:
    """TIFU-KNN (Hu, He, Vehling, Wang & Gao, SIGIR 2020): time-decayed personal item frequency
    blended with the nearest customers'. The strongest simple next-basket method in the reality
    checks (Li et al., TOIS 2023; the "[RE] TIFU-KNN" reproduction, 2024). Defaults: the paper's
    Ta-Feng setting; `evaluate` chooses them on the validation window (`tune_tifu`).

    Unlike the other baselines it reads baskets (orders), not counts: fit(baskets) with
    CUSTOMER_ID, BASKET, ORDERED_AT, ITEM lines before the cutoff. A customer without any basket
    scores every item 0 but for a popularity tie-break far below any basket's weight.
    """

    k: int = 300
    rb: float = 0.9
    rg: float = 0.7
    alpha: float = 0.7
    m: int = 7
    name: ClassVar[str] = "tifu_knn"
    customers: pd.Index = field(init=False, repr=False)
    items: pd.Index = field(init=False, repr=False)
    table: np.ndarray = field(init=False, repr=False)  # (n_customers, n_items) scores
    popularity: pd.Series = field(init=False, repr=False)

    def fit(self, baskets: pd.DataFrame) -> Self:
        fitted = next(self.grid(baskets, [(self.k, self.rb, self.rg, self.alpha)], self.m))
        self.customers, self.items, self.table, self.popularity = (
            fitted.customers, fitted.items, fitted.table, fitted.popularity)
        return self

    @classmethod
    def grid(cls, baskets: pd.DataFrame, settings: Iterable[tuple[int, float, float, float]],
             m: int | None = None) -> Iterator[Self]:
        """Each (k, rb, rg, alpha) of `settings` (and group size m, default the class's), in
        order, fitted on the same baskets, with the work shared: the vectors once per (rb, rg),
        one neighbour search per vectors, the neighbours' mean once per k. Own vector x alpha +
        the mean vector of the k nearest other customers (Euclidean) x (1 - alpha)."""
        m = cls.m if m is None else m
        settings = list(settings)
        share = baskets.drop_duplicates([CUSTOMER_ID, ITEM])[ITEM].value_counts(normalize=True)
        vectors, means = {}, {}
        for k, rb, rg, alpha in settings:
            if (rb, rg) not in vectors:
                customers, items, v = tifu_vectors(baskets, rb, rg, m)
                vectors[rb, rg] = customers, items, v.toarray()
                if len(customers) >= 2:
                    found = tifu_neighbours(vectors[rb, rg][2], [s[0] for s in settings])
                    means |= {(rb, rg, n): neighbour_mean(vectors[rb, rg][2], f) for n, f in found.items()}
            customers, items, v = vectors[rb, rg]
            tifu = cls(k=k, rb=rb, rg=rg, alpha=alpha, m=m)
            tifu.customers, tifu.items, tifu.popularity = customers, items, share
            n = min(k, len(customers) - 1)
            tifu.table = v.copy() if len(customers) < 2 or alpha >= 1 else alpha * v + (1 - alpha) * means[rb, rg, n]
            yield tifu

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        rows = self.customers.get_indexer(candidates[CUSTOMER_ID])
        cols = self.items.get_indexer(candidates[ITEM])
        positive = self.table[self.table > 0]
        floor = positive.min() if positive.size else 1.0  # the tie-break stays far below any weight
        tie_break = candidates[ITEM].map(self.popularity).fillna(0.0).to_numpy() * floor * 1e-6
        return _lookup(self.table, rows, cols) + tie_break


def oracle_scores(candidates: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """The true propensity of each candidate pair: the best ranking any model could make.

    `truth` has CUSTOMER_ID, ITEM, PROPENSITY (from the generator's `synth` schema). Every
    candidate must have a propensity, and one only: a missing or duplicated pair means the
    two frames disagree, so it raises rather than inventing a score.
    """
    key = [CUSTOMER_ID, ITEM]
    # validate="m:1" raises pandas.errors.MergeError when `truth` repeats a pair.
    merged = candidates[key].merge(truth[key + [PROPENSITY]], on=key, how="left", validate="m:1")
    missing = int(merged[PROPENSITY].isna().sum())
    if missing:
        raise ValueError(f"{missing} candidate pairs have no true propensity")
    return merged[PROPENSITY].to_numpy(dtype=np.float64)


def default_baselines() -> list[Baseline]:
    """The baselines reported next to the DLRM, with their default settings."""
    return [GlobalPopularity(), CityPopularity(), ItemKNN(), ImplicitALS(), Repeat(), RecentRepeat()]


def score_all(
    history: pd.DataFrame,
    customers: pd.DataFrame,
    candidates: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    baskets: pd.DataFrame | None = None,
    tifu: TifuKNN | None = None,
) -> dict[str, np.ndarray]:
    """Fit every default baseline on `history` and score the same `candidates` with each.

    Returns {name: scores aligned with candidates' rows}; adds "tifu_knn" when `baskets` (the
    orders before the cutoff, see TifuKNN) are given, with `tifu`'s settings (default: the
    paper's), and "oracle" when `truth` is given.
    """
    scores = {
        baseline.name: baseline.fit(history, customers).score(candidates)
        for baseline in default_baselines()
    }
    if baskets is not None:
        scores[TifuKNN.name] = (tifu or TifuKNN()).fit(baskets).score(candidates)
    if truth is not None:
        scores["oracle"] = oracle_scores(candidates, truth)
    return scores
