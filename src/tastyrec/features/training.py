"""Training sets from Feast's point-in-time joins.

Training sets end in the SQL of `assemble`: per-pair features from the history lists, defaults
for "no history yet", and the column order of columns.py. Serving (features.online) builds the
same rows with numpy; tests/test_features.py checks that a training row and a serving row of the
same customer, item and snapshot are equal column for column.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tastyrec.columns import (CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM, ITEM_PURCHASE_COUNT, LABEL,
                              MULTI_HOT, SPARSE, TIMESTAMP)
from tastyrec.config import WINDOW_DAYS, Workspace, duckdb_memory
from tastyrec.features import definitions
from tastyrec.features.build import SQL, TRAIN_WINDOWS, feast_prints, feature_store, snapshot_times
from tastyrec.sqlfiles import run_sql

SPLITS = ("train", "val", "test")
KEYS = [CUSTOMER_ID, ITEM, TIMESTAMP]
FEATURES = [f for f in SPARSE + DENSE + MULTI_HOT if f not in KEYS]
# customer-level feature references: one online row per customer
CUSTOMER_REFS = [r for r in definitions.feature_refs() if not r.startswith("menu_features:")]
MENU_REFS = [r for r in definitions.feature_refs() if r.startswith("menu_features:")]


@dataclass
class TrainingSet:
    mode: str
    paths: dict[str, str]      # split -> Parquet path
    rows: dict[str, int]       # split -> rows
    positives: dict[str, int]  # split -> rows with label 1
    cutoffs: dict[str, list[str]]
    seconds: float


# Per customer x item features, looked up in the customer's history lists (customer_history):
# one definition for training sets and serving, so they cannot drift apart.
PAIR_FEATURES = {
    ITEM_PURCHASE_COUNT: "history_item_orders[list_position(history_items, menu_item_name)]",
    "days_since_item_purchase": "history_item_days[list_position(history_items, menu_item_name)]",
    "brand_spend_share": "history_brand_shares[list_position(history_brands, truck_brand_name)]",
}


def _assemble_sql(extra: list[str]) -> str:
    """SELECT of KEYS + extra + FEATURES over the spine, customers and items (see assemble)."""
    def expr(col: str) -> str:
        if col in DENSE:
            return f"coalesce({PAIR_FEATURES.get(col, col)}, {DENSE_DEFAULTS.get(col, 0.0)})::DOUBLE AS {col}"
        if col in MULTI_HOT:  # a customer with no history yet has an empty bag
            return f"coalesce({col}, []::VARCHAR[]) AS {col}"
        return col
    select = ", ".join(KEYS + extra + [expr(c) for c in FEATURES])
    return (f"SELECT {select} FROM spine "
            f"LEFT JOIN customers USING ({CUSTOMER_ID}, {TIMESTAMP}) LEFT JOIN items USING ({ITEM}, {TIMESTAMP}) "
            f"ORDER BY {TIMESTAMP}, {CUSTOMER_ID}, {ITEM}")


def assemble(con: duckdb.DuckDBPyConnection, spine, customers, items=None) -> duckdb.DuckDBPyRelation:
    """Join spine rows (KEYS [+ label, split]) with customer- and item-level features as of their
    timestamps, derive the pair features and put the columns in columns.py order.

    Frames may be pandas or Arrow. With items=None, a table `items` already in con is used.
    """
    cursor = con.cursor()
    for name, frame in (("spine", spine), ("customers", customers), ("items", items)):
        if frame is not None:
            cursor.register(name, frame)
    names = spine.column_names if isinstance(spine, pa.Table) else list(spine.columns)
    extra = [c for c in (LABEL, "split") if c in names]
    return cursor.execute(_assemble_sql(extra))


def _spine(con, mode: str, seed: int, train_windows: int) -> tuple[pa.Table, dict[str, list[str]]]:
    """(customer_id, menu_item_name, event_timestamp, label, split) rows and the cutoffs used.

    Arrow, not pandas: at N = 222,000 the spine has tens of millions of rows.
    """
    if not 1 <= train_windows <= TRAIN_WINDOWS:
        raise ValueError(f"train_windows must be 1..{TRAIN_WINDOWS} (the snapshots `tastyrec features` builds)")
    snapshots = snapshot_times(con, train_windows)
    if mode == "time":
        cutoffs = [s.replace(tzinfo=None) for s in snapshots[:-1]]  # the last snapshot has no future
        names = ["train"] * (len(cutoffs) - 2) + ["val", "test"]
        params = {"cutoffs": cutoffs, "splits": names, "window_days": WINDOW_DAYS}
        spine = run_sql(con, SQL, "spine_time.sql", params, views=["candidates.sql"]).to_arrow_table()
        by_split = {name: [c.isoformat() for c, n in zip(cutoffs, names) if n == name] for name in SPLITS}
    elif mode == "random":
        as_of = snapshots[-1].replace(tzinfo=None)
        spine = run_sql(con, SQL, "spine_random.sql", {"as_of": as_of, "seed": seed}).to_arrow_table()
        by_split = {name: [as_of.isoformat()] for name in SPLITS}
    else:
        raise ValueError(f"unknown split mode {mode!r}: use 'time' or 'random'")
    i = spine.schema.get_field_index(TIMESTAMP)
    spine = spine.set_column(i, TIMESTAMP, spine.column(i).cast(pa.timestamp("us", tz="UTC")))
    return spine, by_split


def build_training_set(ws: Workspace, mode: str = "time", seed: int = 42, train_windows: int = 2,
                       max_customers: int | None = None) -> TrainingSet:
    """Spine -> Feast get_historical_features -> pair features -> <home>/datasets/<mode>/<split>.parquet.

    Each split is written by DuckDB straight to Parquet (COPY), so the per-row history lists are
    never all in memory at once.
    """
    from tastyrec.warehouse.load import connect

    started = time.perf_counter()
    con = connect(ws.warehouse, read_only=True)
    try:
        spine, cutoffs = _spine(con, mode, seed, train_windows)
    finally:
        con.close()
    if max_customers:
        keep = pc.unique(spine.column(CUSTOMER_ID)).sort()[:max_customers]
        spine = spine.filter(pc.is_in(spine.column(CUSTOMER_ID), value_set=keep))
    customers, items = point_in_time(feature_store(ws), spine)
    out_dir = ws.home / "datasets" / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": duckdb_memory(), "temp_directory": str(ws.home / "duckdb_tmp")})
    paths, rows, positives = {}, {}, {}
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("customers", customers)
        con.register("items", items)
        for name in SPLITS:
            con.register("spine", spine.filter(pc.equal(spine.column("split"), name)).drop_columns(["split"]))
            path = out_dir / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            con.execute(f"COPY ({_assemble_sql([LABEL])}) TO $path (FORMAT parquet, ROW_GROUP_SIZE 256000)",
                        {"path": str(tmp)})
            os.replace(tmp, path)
            n, pos = con.execute(f"SELECT count(*), coalesce(sum({LABEL}), 0) FROM read_parquet(?)",
                                 [str(path)]).fetchone()
            paths[name], rows[name], positives[name] = str(path), int(n), int(pos)
            con.unregister("spine")
    finally:
        con.close()
    return TrainingSet(mode=mode, paths=paths, rows=rows, positives=positives, cutoffs=cutoffs,
                       seconds=round(time.perf_counter() - started, 2))


def point_in_time(store, spine: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer and item features as of each spine timestamp, via Feast's point-in-time join.

    Features are per customer or per item, so Feast joins the distinct (customer, timestamp) and
    (item, timestamp) rows (tens of thousands, not millions); `assemble` joins them back.
    """
    def historical(key: str, refs: list[str]) -> pd.DataFrame:
        entities = spine.select([key, TIMESTAMP]).group_by([key, TIMESTAMP]).aggregate([]).to_pandas()
        with feast_prints():
            found = store.get_historical_features(entity_df=entities, features=refs).to_df()
        found[TIMESTAMP] = found[TIMESTAMP].astype("datetime64[us, UTC]")  # Feast may change precision
        return found

    return historical(CUSTOMER_ID, CUSTOMER_REFS), historical(ITEM, MENU_REFS)

