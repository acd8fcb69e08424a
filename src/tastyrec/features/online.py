"""Serving features: the Feast online store read for customers x candidate items.

Rows have exactly the columns, order and values of a training set's rows (the SQL assembly in
features.training); they are built here with numpy instead of DuckDB because serving asks for
one customer's ~40 rows at a time, where a query costs more than the work. A test checks that
both give the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.types import Array, Float64, String

from tastyrec.columns import BAG_SCORES, BRAND, CITY, CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM, MULTI_HOT, TIMESTAMP
from tastyrec.collaborative import BagWeights, lengths
from tastyrec.config import Workspace
from tastyrec.features import definitions
from tastyrec.features.build import SQL, feature_store
from tastyrec.features.stores import SQLITE, SQLITE_FILE, OnlineStore, OnlineStoreError
from tastyrec.features.training import CUSTOMER_REFS, FEATURES, KEYS, MENU_REFS, PAIR_FEATURES
from tastyrec.sqlfiles import run_sql
from tastyrec.warehouse.load import connect

ARROW_TYPES = {Float64: pa.float64(), String: pa.string(), Array(Float64): pa.list_(pa.float64()),
               Array(String): pa.list_(pa.string())}
# one online row per customer, as `OnlineFeatures.customers` gives it
CUSTOMER_SCHEMA = pa.schema([(CUSTOMER_ID, pa.int64())] + [
    (feature, ARROW_TYPES[kind]) for view, (entities, fields, _) in definitions.VIEWS.items()
    if entities == [definitions.customer] for feature, kind in fields])


class OnlineFeatures:
    """Reads serving features from the Feast online store, shaped like a training set.

    Loads what does not change between `tastyrec features` runs once: the menu features, the
    candidate items per city and the serving snapshot time.
    """

    def __init__(self, ws: Workspace):
        self.repo = ws.feature_repo  # this run, whatever later runs swap in: a reload opens those
        self.run = self.repo.name
        summary = json.loads((self.repo / "summary.json").read_text())
        store = OnlineStore.parse(summary.get("online_store", SQLITE))
        # a Redis store that does not answer: OnlineStoreError, in plain words, before any lookup
        store.check()
        self.sqlite_file = None if store.is_redis else self.repo / SQLITE_FILE
        self.store = feature_store(self.repo)
        self.as_of = pd.Timestamp(datetime.fromisoformat(summary["snapshots"][-1])).tz_convert("UTC")
        self.window_days = int(summary["windows"]["window_days"])  # the label window: what a score is a chance over
        con = connect(ws.warehouse, read_only=True)
        try:
            candidates = run_sql(con, SQL, "candidates.sql").df()
        finally:
            con.close()
        self.items = sorted(candidates[ITEM].unique())
        with self._reading():
            self.menu = (self.store.get_online_features(features=MENU_REFS, entity_rows={ITEM: self.items})
                         .to_df().set_index(ITEM).loc[self.items])  # one row per item, by name
        self.candidates = {city: sorted(group) for city, group in candidates.groupby(CITY)[ITEM]}
        self.city_items = {city: np.sort(self.menu.index.get_indexer(names))  # the same, as positions in items
                           for city, names in self.candidates.items()}
        self.bag_weights = BagWeights(self.menu)  # the bag scores' history item x item weights
        brands = sorted(self.menu[BRAND].dropna().unique())
        self.item_brand = pd.Index(brands).get_indexer(self.menu[BRAND])  # (items,) position in brands
        self.keys = {ITEM: pa.array(self.items, pa.string()), BRAND: pa.array(brands, pa.string())}
        # what a row reads from its item, once per features run: (items,) arrays in tensor-ready form
        self.item_columns = {ITEM: np.asarray(self.items, dtype=object)} | {
            col: _defaulted(col, self.menu[col].to_numpy()) for col in FEATURES if col in self.menu.columns}

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Online reads that fail for a reason outside the request become OnlineStoreError (the
        service answers 503 with it, the CLI prints it): a missing or locked SQLite file, or a
        feature view Feast will not serve (e.g. left MATERIALIZING by a materialisation that was
        cut short)."""
        where = self.sqlite_file or self.repo
        if self.sqlite_file is not None and not self.sqlite_file.exists():  # Feast would create an empty one
            raise OnlineStoreError(f"the online store {where} is missing: run `tastyrec features` to rebuild it")
        try:
            yield
        except sqlite3.Error as e:
            raise OnlineStoreError(f"the online store {where} cannot be read ({e}): if another program holds it, "
                                   "try again when it is done; else run `tastyrec features` to rebuild it") from None
        except ValueError as e:
            if "cannot serve features" not in str(e):
                raise
            raise OnlineStoreError(f"the features in {self.repo} cannot be served ({e}): run `tastyrec features`") from None

    def customers(self, customer_ids: list[int]) -> pa.Table:
        """The online rows of these customers (every customer-level feature, history lists
        included), stamped with the serving snapshot. Unknown customers have a null city."""
        with self._reading():
            values = self.store.get_online_features(
                features=CUSTOMER_REFS, entity_rows={CUSTOMER_ID: [int(c) for c in customer_ids]}).to_dict()
        # Feast's to_arrow costs a third of a one-customer request; the columns as plain lists,
        # typed by the feature definitions, are the same table
        return self._stamped(pa.Table.from_pydict(values, schema=CUSTOMER_SCHEMA))

    def snapshot(self, customer_ids: list[int], batch_customers: int,
                 refs: list[str] = CUSTOMER_REFS) -> Iterator[pa.Table]:
        """What `customers` gives for these customers (in the order given), read in bulk from the
        features run's offline Parquet instead of one online lookup each: per customer view, the
        newest row at or before the serving snapshot (what materialisation copied to the online
        store; a test checks that they agree). Yields tables of at most `batch_customers` rows.
        refs: the features to read ("view:feature"; default: every customer feature)."""
        import duckdb

        views: dict[str, list[str]] = {}
        for ref in refs:
            view, feature = ref.split(":")
            views.setdefault(view, []).append(feature)
        data = self.repo / "data"
        newest = " ".join(
            f"LEFT JOIN (SELECT {CUSTOMER_ID}, {', '.join(features)} FROM read_parquet($v{i}) "
            f"WHERE {TIMESTAMP} <= $as_of QUALIFY row_number() OVER (PARTITION BY {CUSTOMER_ID} "
            f"ORDER BY {TIMESTAMP} DESC) = 1) USING ({CUSTOMER_ID})" for i, (_, features) in enumerate(views.items()))
        columns = ", ".join(f for features in views.values() for f in features)
        params = {f"v{i}": str(data / f"{view}.parquet") for i, view in enumerate(views)}
        with duckdb.connect() as con:
            con.execute("SET enable_progress_bar = false")  # the caller shows progress
            con.register("wanted", pa.table({CUSTOMER_ID: pa.array(customer_ids, pa.int64()),
                                             "position": pa.array(range(len(customer_ids)), pa.int64())}))
            reader = con.execute(f"SELECT {CUSTOMER_ID}, {columns} FROM wanted {newest} ORDER BY position",
                                 params | {"as_of": self.as_of.to_pydatetime()}).to_arrow_reader(batch_customers)
            pending: list[pa.RecordBatch] = []
            for batch in reader:  # DuckDB's batches have sizes of its own: regrouped to batch_customers
                pending.append(batch)
                while sum(len(b) for b in pending) >= batch_customers:
                    table = pa.Table.from_batches(pending)
                    yield self._stamped(table.slice(0, batch_customers).combine_chunks())
                    pending = table.slice(batch_customers).to_batches()
            if sum(len(b) for b in pending):
                yield self._stamped(pa.Table.from_batches(pending).combine_chunks())

    def _stamped(self, table: pa.Table) -> pa.Table:
        """The table with the serving snapshot as its TIMESTAMP column."""
        return table.append_column(TIMESTAMP, pa.array([self.as_of] * table.num_rows, pa.timestamp("us", tz="UTC")))

    def pairs(self, customers: pa.Table, items: list[str] | None = None) -> Pairs:
        """Each customer row x (their city's candidate items, or `items`), sorted by customer then
        item (as the SQL assembly sorts), stored by level (see Pairs)."""
        ids = np.asarray(customers.column(CUSTOMER_ID).to_numpy(zero_copy_only=False), dtype=np.int64)
        cities = customers.column(CITY).to_pylist()
        wanted = None if items is None else np.sort(self.menu.index.get_indexer([i for i in items if i in self.menu.index]))
        order = [i for i in np.argsort(ids, kind="stable") if cities[i] is not None]
        chosen = [wanted if wanted is not None else self.city_items.get(cities[i], np.empty(0, np.int64)) for i in order]
        customer = np.repeat(np.asarray(order, dtype=np.int64), [len(c) for c in chosen])
        item = np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, np.int64)
        return Pairs(customers, ids, self.item_columns, customer, item, Lookups(self, customers))

    def frame(self, pairs: Pairs) -> pd.DataFrame:
        """The rows of `pairs` as one frame in the training set's column order."""
        out = {CUSTOMER_ID: pairs.ids[pairs.customer], ITEM: pairs.column(ITEM),
               TIMESTAMP: pd.DatetimeIndex([self.as_of] * len(pairs), dtype=pd.DatetimeTZDtype("us", "UTC"))}
        for col in FEATURES:
            values = pairs.column(col)
            if col in MULTI_HOT:  # a customer with no history yet has an empty bag
                values = pd.Series([np.array([] if v is None else v, dtype=object) for v in values], dtype=object)
            out[col] = values
        return pd.DataFrame({c: out[c] for c in KEYS + FEATURES})

    def candidate_rows(self, customers: pa.Table, items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer row x (their city's candidate items, or `items`), in the
        training set's column order, sorted by customer then item (as the SQL assembly sorts)."""
        return self.frame(self.pairs(customers, items))

    def for_customers(self, customer_ids: list[int], items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer x (their city's candidate items, or `items`), training-set order.

        Unknown customers and unknown item names give no rows.
        """
        return self.candidate_rows(self.customers(customer_ids), items)


class Lookups:
    """What the per-pair features of some customers are read from, each a (customers, keys)
    table built on first use (a request that uses precomputed scores needs few of them): the
    PAIR_FEATURES (keys: the history's items or brands) and the BAG_SCORES (keys: the items).
    Shared by a Pairs and every `take` of it."""

    def __init__(self, online: OnlineFeatures, customers: pa.Table):
        self.online, self.customers = online, customers
        # history list -> (owner, code, known) of its elements (see _codes), (customers, keys) whether in it
        self.places: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.tables: dict[str, np.ndarray] = {}  # feature -> (customers, keys) value, defaults filled

    def key(self, by: str, item: np.ndarray) -> np.ndarray:
        """Each row's key for a lookup by `by` (ITEM or BRAND): a position in OnlineFeatures.keys[by]."""
        return item if by == ITEM else self.online.item_brand[item]

    def _places(self, keys: str, by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if keys not in self.places:
            owner, code = _codes(self.customers.column(keys), self.online.keys[by])
            known = code >= 0
            present = np.zeros((self.customers.num_rows, len(self.online.keys[by])), dtype=bool)
            present[owner[known], code[known]] = True
            self.places[keys] = owner[known], code[known], known, present
        return self.places[keys]

    def found(self, keys: str, by: str) -> np.ndarray:
        return self._places(keys, by)[3]

    def table(self, feature: str) -> np.ndarray:
        if feature not in self.tables:
            if feature in BAG_SCORES:  # all of them at once: they share the bags' codes
                customers = self.customers
                aligned = {w: customers.column(w).combine_chunks() for _, w in BAG_SCORES.values() if w is not None}
                self.tables |= self.online.bag_weights.scores(customers.column("history_items").combine_chunks(), aligned)
            else:
                keys, values, by = PAIR_FEATURES[feature]
                owner, code, known, present = self._places(keys, by)
                flat = self.customers.column(values).combine_chunks().flatten().to_numpy(zero_copy_only=False)
                table = np.full(present.shape, np.nan)
                table[owner, code] = np.asarray(flat, dtype=np.float64)[known]
                self.tables[feature] = _defaulted(feature, table)
        return self.tables[feature]


@dataclass
class Pairs:
    """Customer x item rows, each value stored once at the level it varies at: the customer's
    (once per customer), the item's (once per features run), the pair's (read from per-customer
    tables, Lookups). What the engine scores without building a frame
    (Preprocessor.transform_pairs); `OnlineFeatures.frame` gives the same rows as a training
    set's frame."""

    customers: pa.Table  # the online rows, one per customer: what varies by customer
    ids: np.ndarray  # (customers,) their ids
    item_columns: dict[str, np.ndarray]  # feature -> (items,) value, defaults filled
    customer: np.ndarray  # (R,) each row's customer: a row of `customers`
    item: np.ndarray  # (R,) each row's item: a position in OnlineFeatures.items
    lookups: Lookups  # the per-pair features' tables, shared by take
    converted: dict[str, Any] = dataclasses.field(default_factory=dict)  # customer_column's, shared by take

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, rows: np.ndarray) -> Pairs:
        """These rows only (positions), in this order."""
        return dataclasses.replace(self, customer=self.customer[rows], item=self.item[rows])

    def found(self, keys: str) -> np.ndarray:
        """(R,) whether each row's item (or brand) is in the customer's `keys` history list."""
        by = next(by for k, _, by in PAIR_FEATURES.values() if k == keys)
        return self.lookups.found(keys, by)[self.customer, self.lookups.key(by, self.item)]

    def customer_column(self, col: str) -> np.ndarray | pa.Array:
        """One customer-level feature, (customers,): dense as float64 with defaults filled,
        others as numpy, the history lists as arrow; converted on first use."""
        if col not in self.converted:
            values = self.customers.column(col).combine_chunks()
            self.converted[col] = values if col in MULTI_HOT else _defaulted(col, values.to_numpy(zero_copy_only=False))
        return self.converted[col]

    def column(self, col: str) -> np.ndarray:
        """One feature's value for every row."""
        if col in PAIR_FEATURES:
            return self.lookups.table(col)[self.customer, self.lookups.key(PAIR_FEATURES[col][2], self.item)]
        if col in BAG_SCORES:
            return self.lookups.table(col)[self.customer, self.item]
        if col in self.item_columns:
            return self.item_columns[col][self.item]
        values = self.customer_column(col)
        if col in MULTI_HOT:
            values = values.to_numpy(zero_copy_only=False)
        return values[self.customer]


def _defaulted(col: str, values: np.ndarray) -> np.ndarray:
    """Dense values as float64 with missing -> the column's default (missing means "no history
    yet", as in training); other columns as they are."""
    if col not in DENSE:
        return values
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(values), DENSE_DEFAULTS.get(col, 0.0), values)


def _codes(lists: pa.ChunkedArray, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(owner, code) of every element of the customers' lists: its customer's row and its
    position in `keys` (-1 where absent)."""
    lists = lists.combine_chunks()
    code = pc.index_in(lists.flatten(), value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False)
    return np.repeat(np.arange(len(lists)), lengths(lists)), code
