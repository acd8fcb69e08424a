"""Serving features: the Feast online store read for customers x candidate items.

Rows come out of the same `assemble` as training sets (features.training), so a serving row and
a training row of the same customer, item and snapshot are equal column for column.
"""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pandas as pd
import pyarrow as pa

from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, TIMESTAMP
from tastyrec.config import Workspace
from tastyrec.features.build import SQL, feature_store
from tastyrec.features.training import CUSTOMER_REFS, MENU_REFS, assemble
from tastyrec.sqlfiles import run_sql
from tastyrec.warehouse.load import connect


class OnlineFeatures:
    """Reads serving features from the Feast online store, shaped like a training set.

    Loads what does not change between `tastyrec features` runs once: the menu features, the
    candidate items per city and the serving snapshot time.
    """

    def __init__(self, ws: Workspace):
        self.store = feature_store(ws)
        summary = json.loads((ws.feature_repo / "summary.json").read_text())
        self.as_of = pd.Timestamp(datetime.fromisoformat(summary["snapshots"][-1])).tz_convert("UTC")
        con = connect(ws.warehouse, read_only=True)
        try:
            candidates = run_sql(con, SQL, "candidates.sql").df()
        finally:
            con.close()
        self.items = sorted(candidates[ITEM].unique())
        menu = self.store.get_online_features(features=MENU_REFS, entity_rows={ITEM: self.items}).to_df()
        self.candidates = candidates.groupby(CITY)[ITEM].apply(list).to_dict()
        # one in-memory DuckDB for assembling rows, with the static menu as its `items` table:
        # opening a connection or registering a frame per request costs more than the query
        self.duckdb = duckdb.connect(config={"threads": 1})  # tiny queries: threads only add overhead
        self.duckdb.register("menu", menu.assign(**{TIMESTAMP: self.as_of}))
        self.duckdb.execute("CREATE TABLE items AS SELECT * FROM menu")
        self.duckdb.unregister("menu")

    def for_customers(self, customer_ids: list[int], items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer x (their city's candidate items, or `items`), training-set order.

        Unknown customers and unknown item names give no rows.
        """
        customers = self.store.get_online_features(
            features=CUSTOMER_REFS, entity_rows={CUSTOMER_ID: [int(c) for c in customer_ids]}).to_arrow()
        known = set(self.items)
        pairs = [(c, item) for c, city in zip(customers.column(CUSTOMER_ID).to_pylist(),
                                              customers.column(CITY).to_pylist()) if city is not None
                 for item in (items if items is not None else self.candidates.get(city, [])) if item in known]
        stamp = pa.array([self.as_of] * customers.num_rows, pa.timestamp("us", tz="UTC"))
        customers = customers.append_column(TIMESTAMP, stamp)
        spine = pa.table({CUSTOMER_ID: pa.array([c for c, _ in pairs], pa.int64()),
                          ITEM: pa.array([i for _, i in pairs], pa.string()),
                          TIMESTAMP: pa.array([self.as_of] * len(pairs), pa.timestamp("us", tz="UTC"))})
        return assemble(self.duckdb, spine, customers).df()
