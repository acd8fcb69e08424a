"""Serving features: the Feast online store read for customers x candidate items.

Rows have exactly the columns, order and values of a training set's rows (the SQL assembly in
features.training); they are built here with numpy instead of DuckDB because serving asks for
one customer's ~40 rows at a time, where a query costs more than the work. A test checks that
both give the same rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from tastyrec.columns import BAG_SCORES, BRAND, CITY, CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM, MULTI_HOT, TIMESTAMP
from tastyrec.collaborative import bag_scores, weight_tables
from tastyrec.config import Workspace
from tastyrec.features.build import SQL, feature_store
from tastyrec.features.stores import SQLITE, SQLITE_FILE, OnlineStore, OnlineStoreError
from tastyrec.features.training import CUSTOMER_REFS, FEATURES, KEYS, MENU_REFS, PAIR_FEATURES
from tastyrec.sqlfiles import run_sql
from tastyrec.warehouse.load import connect

# the per customer x item features and the customer's aligned lists they are looked up in


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
        self.weights = weight_tables(self.menu)  # item x history item weights of the bag scores

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
            table = self.store.get_online_features(
                features=CUSTOMER_REFS, entity_rows={CUSTOMER_ID: [int(c) for c in customer_ids]}).to_arrow()
        return table.append_column(TIMESTAMP, pa.array([self.as_of] * table.num_rows, pa.timestamp("us", tz="UTC")))

    def candidate_rows(self, customers: pa.Table, items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer row x (their city's candidate items, or `items`), in the
        training set's column order, sorted by customer then item (as the SQL assembly sorts)."""
        ids = customers.column(CUSTOMER_ID).to_pylist()
        cities = customers.column(CITY).to_pylist()
        wanted = sorted(i for i in items if i in self.menu.index) if items is not None else None
        rows, names = [], []  # customer row index and item name of every output row
        for i in sorted(range(len(ids)), key=ids.__getitem__):
            if cities[i] is not None:
                chosen = wanted if wanted is not None else self.candidates.get(cities[i], [])
                rows += [i] * len(chosen)
                names += chosen
        take = pa.array(rows, pa.int64())
        menu = self.menu.loc[names]
        lookups = _pair_features(customers, rows, names, menu[BRAND].tolist())
        bags = customers.column("history_items").to_pylist()
        aligned = {w: customers.column(w).to_pylist() for _, w in BAG_SCORES.values() if w is not None}
        lookups |= bag_scores([bags[i] for i in rows], names, self.weights,
                              {w: [values[i] for i in rows] for w, values in aligned.items()})
        out = {CUSTOMER_ID: np.array([ids[i] for i in rows], dtype=np.int64), ITEM: np.array(names, dtype=object),
               TIMESTAMP: pd.DatetimeIndex([self.as_of] * len(rows), dtype=pd.DatetimeTZDtype("us", "UTC"))}
        for col in FEATURES:
            if col in lookups:
                values = lookups[col]
            elif col in menu.columns:
                values = menu[col].to_numpy()
            else:
                values = customers.column(col).take(take).to_pandas().to_numpy()
            if col in DENSE:  # missing means "no history yet": the column's default, as in training
                values = np.asarray(values, dtype=np.float64)
                values = np.where(np.isnan(values), DENSE_DEFAULTS.get(col, 0.0), values)
            elif col in MULTI_HOT:  # a customer with no history yet has an empty bag
                values = pd.Series([np.array([] if v is None else v, dtype=object) for v in values], dtype=object)
            out[col] = values
        return pd.DataFrame({c: out[c] for c in KEYS + FEATURES})

    def for_customers(self, customer_ids: list[int], items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer x (their city's candidate items, or `items`), training-set order.

        Unknown customers and unknown item names give no rows.
        """
        return self.candidate_rows(self.customers(customer_ids), items)


def _pair_features(customers: pa.Table, rows: list[int], names: list[str], brands: list[str]) -> dict[str, np.ndarray]:
    """The PAIR_FEATURES (item_purchase_count, ...) of every output row, looked up in its
    customer's aligned history lists (NaN where absent: the caller's default)."""
    out = {}
    for feature, (keys_col, values_col, by) in PAIR_FEATURES.items():
        lookup = [dict(zip(k or [], v or [])) for k, v in zip(customers.column(keys_col).to_pylist(),
                                                             customers.column(values_col).to_pylist())]
        what = names if by == ITEM else brands
        out[feature] = np.array([lookup[r].get(w, np.nan) for r, w in zip(rows, what)], dtype=np.float64)
    return out
