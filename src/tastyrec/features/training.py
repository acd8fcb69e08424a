"""Training sets: the point-in-time join of the feature views (Feast's, done by DuckDB).

Training sets end in the SQL of `assemble`: per-pair features from the history lists, defaults
for "no history yet", and the column order of columns.py. Serving (features.online) builds the
same rows with numpy; tests/test_features.py checks that a training row and a serving row of the
same customer, item and snapshot are equal column for column.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa

from tastyrec.columns import (BAG_SCORES, BRAND, COLLAB_ITEMS, CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM,
                              ITEM_PURCHASE_COUNT, ITEM_RECENT_ORDERS, LABEL, MULTI_HOT, SPARSE, TIMESTAMP)
from tastyrec.config import TRAINING_SET_MAX_GB, Progress, Workspace, training_set_memory
from tastyrec.features import definitions
from tastyrec.features.build import SQL, FeaturesError, FeaturesResult, current_features, features_id
from tastyrec.parquet_rows import release_memory
from tastyrec.sqlfiles import quote_path, read_sql

SPLITS = ("train", "val", "test")
BUILT_FROM = "built_from.json"  # beside the splits: the features run they were built from (features_id)
KEYS = [CUSTOMER_ID, ITEM, TIMESTAMP]
FEATURES = [f for f in SPARSE + DENSE + MULTI_HOT if f not in KEYS]
# feature references per entity: one online row per customer, one per menu item
ITEM_VIEWS = tuple(name for name, (entities, _, _) in definitions.VIEWS.items() if entities == [definitions.menu_item])
CUSTOMER_REFS = [r for r in definitions.feature_refs() if r.split(":")[0] not in ITEM_VIEWS]
MENU_REFS = [r for r in definitions.feature_refs() if r.split(":")[0] in ITEM_VIEWS]


@dataclass
class TrainingSet:
    mode: str
    paths: dict[str, str]      # split -> Parquet path
    rows: dict[str, int]       # split -> rows
    positives: dict[str, int]  # split -> rows with label 1
    cutoffs: dict[str, list[str]]
    seconds: float


# Per customer x item features, looked up in the customer's aligned history lists
# (customer_history): feature -> (keys list, values list, the row's key column). One definition
# for training sets (SQL, below) and serving (features.online), so they cannot drift apart.
PAIR_FEATURES: dict[str, tuple[str, str, str]] = {
    ITEM_PURCHASE_COUNT: ("history_items", "history_item_orders", ITEM),
    "days_since_item_purchase": ("history_items", "history_item_days", ITEM),
    ITEM_RECENT_ORDERS: ("history_items", "history_item_recent", ITEM),
    "item_interval_days": ("history_items", "history_item_interval", ITEM),
    "item_order_share": ("history_items", "history_item_share", ITEM),
    "item_basket_decay": ("history_items", "history_item_decay", ITEM),
    "item_last_baskets": ("history_items", "history_item_last", ITEM),
    "brand_spend_share": ("history_brands", "history_brand_shares", BRAND),
}


def _pair_sql(feature: str) -> str:
    keys, values, by = PAIR_FEATURES[feature]
    return f"{values}[list_position({keys}, {by})]"


def _assemble_sql(extra: list[str]) -> str:
    """SELECT of KEYS + extra + FEATURES over the spine, customers and items (see assemble)."""
    def expr(col: str) -> str:
        if col in DENSE:
            value = _pair_sql(col) if col in PAIR_FEATURES else col
            return f"coalesce({value}, {DENSE_DEFAULTS.get(col, 0.0)})::DOUBLE AS {col}"
        if col in MULTI_HOT:  # a customer with no history yet has an empty bag
            return f"coalesce({col}, []::VARCHAR[]) AS {col}"
        return col
    select = ", ".join(KEYS + extra + [expr(c) for c in FEATURES])
    return (f"WITH {_COLLAB_SQL} SELECT {select} FROM spine "
            f"LEFT JOIN customers USING ({CUSTOMER_ID}, {TIMESTAMP}) LEFT JOIN items USING ({ITEM}, {TIMESTAMP}) "
            f"LEFT JOIN collab USING ({CUSTOMER_ID}, {ITEM}, {TIMESTAMP}) "
            f"ORDER BY {TIMESTAMP}, {CUSTOMER_ID}, {ITEM}")


# The BAG_SCORES of every spine customer (and timestamp) x menu item: the item's weights (its
# item_collaborative lists as of the timestamp) summed over the customer's history bag, each times
# its bag weight, as a join of the unnested lists (collaborative.bag_scores sums the same lists in
# numpy); `assemble`'s LEFT JOIN keeps the spine's items. Keeping only those before the sums (a
# semi join on three keys) took 8.3 of the training split's 16.3 s on the default data; summing
# every item takes 1.4x the groups. Each term is rounded to 6 decimals: so is the sum, rounded,
# whatever order the additions took.
def _term(column: str, bag_weight: str | None) -> str:
    return f"w.{column}" if bag_weight is None else f"round(w.{column} * ln(1 + b.{bag_weight}), 6)"


_BAG_WEIGHTS = sorted({w for _, w in BAG_SCORES.values() if w is not None})
_COLLAB_SQL = f"""
    bag AS (SELECT c.{CUSTOMER_ID}, c.{TIMESTAMP}, unnest(c.history_items) AS {COLLAB_ITEMS}
                   {"".join(f", unnest(c.{w}) AS {w}" for w in _BAG_WEIGHTS)}
            FROM customers c SEMI JOIN spine s USING ({CUSTOMER_ID}, {TIMESTAMP})),
    weights AS (SELECT {ITEM}, {TIMESTAMP}, unnest({COLLAB_ITEMS}) AS {COLLAB_ITEMS},
                       {", ".join(f"unnest({column}) AS {column}" for column, _ in BAG_SCORES.values())}
                FROM items),
    collab AS (SELECT b.{CUSTOMER_ID}, b.{TIMESTAMP}, w.{ITEM},
                      {", ".join(f"round(sum({_term(*how)}), 6) AS {name}" for name, how in BAG_SCORES.items())}
               FROM bag b JOIN weights w USING ({TIMESTAMP}, {COLLAB_ITEMS})
               GROUP BY b.{CUSTOMER_ID}, b.{TIMESTAMP}, w.{ITEM})"""


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


def chosen_cutoffs(built: FeaturesResult, mode: str, train_windows: int | None) -> dict[str, list[str]]:
    """split -> cutoff days: the newest `train_windows` (None: all) of the training cutoffs the
    features were built for, validation and test; the random split uses the serving snapshot."""
    if mode == "random":
        return {name: [built.data_span[1]] for name in SPLITS}
    if mode != "time":
        raise ValueError(f"unknown split mode {mode!r}: use 'time' or 'random'")
    train = built.cutoffs["train"]
    if train_windows is not None and not 1 <= train_windows <= len(train):
        raise FeaturesError(f"--train-windows must be 1..{len(train)}: `tastyrec features` built "
                            f"{len(train)} training cutoff(s); run it with --train-windows {train_windows} for more")
    return {**built.cutoffs, "train": train[-train_windows:] if train_windows else train}


def _spine(con: duckdb.DuckDBPyConnection, built: FeaturesResult, cutoffs: dict[str, list[str]], mode: str,
           seed: int, max_customers: int | None) -> None:
    """The temp table `spine_all`: (customer_id, menu_item_name, event_timestamp, label, split)
    rows for these cutoffs (the first `max_customers` customers only, when given), from the
    warehouse attached to `con` as its default database.

    DuckDB's own table, not a frame: at N = 222,000 the spine has tens of millions of rows.
    """
    if mode == "time":
        days = [(pd.Timestamp(d).to_pydatetime(), name) for name in SPLITS for d in cutoffs[name]]
        name, params = "spine_time.sql", {"cutoffs": [d for d, _ in days], "splits": [n for _, n in days],
                                          "window_days": built.windows["window_days"]}
        con.execute(f"CREATE OR REPLACE TEMP VIEW candidates AS {read_sql(SQL, 'candidates.sql').rstrip().rstrip(';')}")
    else:
        name, params = "spine_random.sql", {"as_of": pd.Timestamp(cutoffs["test"][0]).to_pydatetime(), "seed": seed}
    body = read_sql(SQL, name).rstrip().rstrip(";")
    con.execute(f"CREATE TEMP TABLE spine_rows AS {body}", params)
    # the cutoffs are days in UTC (the session's time zone is UTC), as the feature views' timestamps
    con.execute(f"CREATE TEMP TABLE spine_all AS SELECT * REPLACE ({TIMESTAMP}::TIMESTAMPTZ AS {TIMESTAMP}) "
                "FROM spine_rows" + (f" WHERE {CUSTOMER_ID} IN (SELECT DISTINCT {CUSTOMER_ID} FROM spine_rows "
                                     f"ORDER BY 1 LIMIT $n)" if max_customers else ""),
                {"n": max_customers} if max_customers else None)
    con.execute("DROP TABLE spine_rows")


def build_training_set(ws: Workspace, mode: str = "time", seed: int = 42, train_windows: int | None = None,
                       max_customers: int | None = None, progress: Progress | None = None) -> TrainingSet:
    """Spine -> point-in-time features -> pair features -> <home>/datasets/<mode>/<split>.parquet.

    train_windows: how many of the training cutoffs `tastyrec features` built to use, newest
    first (None: all of them).

    All in one DuckDB connection, each split written straight to Parquet (COPY), under a memory
    limit that grows with the spine's rows (config.training_set_memory): joining and sorting a
    split's rows with their history bags is what takes memory; what does not fit spills to disk.
    """
    started = time.perf_counter()
    built = current_features(ws)  # features of another warehouse would not match its labels
    cutoffs = chosen_cutoffs(built, mode, train_windows)
    out_dir = ws.home / "datasets" / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BUILT_FROM).unlink(missing_ok=True)  # a build cut short is never taken for a current one
    release_memory()  # what the stages before this one freed
    con = duckdb.connect(config={"memory_limit": training_set_memory(0), "temp_directory": str(ws.home / "duckdb_tmp")})
    paths, rows, positives = {}, {}, {}
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH {quote_path(ws.warehouse)} AS warehouse (READ_ONLY)")
        con.execute("USE warehouse")
        _spine(con, built, cutoffs, mode, seed, max_customers)
        (n_spine,) = con.execute("SELECT count(*) FROM spine_all").fetchone()
        limit = training_set_memory(n_spine)
        con.execute("SET memory_limit = $limit", {"limit": limit})
        limit = point_in_time(con, ws.feature_repo / "data", limit)
        for name in SPLITS:
            con.execute("CREATE OR REPLACE TEMP TABLE spine AS SELECT * EXCLUDE (split) FROM spine_all "
                        "WHERE split = $name", {"name": name})
            path = out_dir / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            limit = _execute(con, f"COPY ({_assemble_sql([LABEL])}) TO $path (FORMAT parquet, ROW_GROUP_SIZE 256000)",
                             {"path": str(tmp)}, limit)
            os.replace(tmp, path)
            n, pos = con.execute(f"SELECT count(*), coalesce(sum({LABEL}), 0) FROM read_parquet(?)",
                                 [str(path)]).fetchone()
            paths[name], rows[name], positives[name] = str(path), int(n), int(pos)
            if progress:
                progress(f"training set ({mode} split)", len(paths), len(SPLITS))
    finally:
        con.close()
    (out_dir / BUILT_FROM).write_text(json.dumps({"features": features_id(ws), "max_customers": max_customers}))
    release_memory()
    return TrainingSet(mode=mode, paths=paths, rows=rows, positives=positives, cutoffs=cutoffs,
                       seconds=round(time.perf_counter() - started, 2))


def _execute(con: duckdb.DuckDBPyConnection, sql: str, params: dict, limit: str | None) -> str | None:
    """Run `sql` under the memory limit `limit` (already set on `con`; None: plain execute). The
    limit estimated from the spine's rows is short where the customers' history lists are longer
    than the synthetic data's (Ta-Feng with 400 items ran out of 1.5 GB): then again under twice
    the limit, up to TRAINING_SET_MAX_GB. A limit set by TASTYREC_DUCKDB_MEMORY is kept as it is.
    Returns the limit it ran under."""
    while True:
        try:
            con.execute(sql, params)
            return limit
        except duckdb.OutOfMemoryException:
            if limit is None or os.environ.get("TASTYREC_DUCKDB_MEMORY") or \
                    (gb := float(limit.removesuffix("GB"))) >= TRAINING_SET_MAX_GB:
                raise
            limit = f"{min(TRAINING_SET_MAX_GB, 2 * gb):.2f}GB"
            con.execute("SET memory_limit = $limit", {"limit": limit})


def _point_in_time_sql(key: str) -> tuple[str, list[str]]:
    """SELECT of the `key` entity's features as of each (key, timestamp) of the spine, and the
    feature views it reads (their Parquet files are the query's parameters $v0, $v1, ...)."""
    views = [name for name, (entities, _, _) in definitions.VIEWS.items() if entities[0].join_key == key]
    columns = ", ".join(f"v{k}.{f}" for k, name in enumerate(views) for f, _ in definitions.VIEWS[name][1])
    joins = " ".join(f"ASOF LEFT JOIN read_parquet($v{k}) v{k} ON e.{key} = v{k}.{key} "
                     f"AND e.{TIMESTAMP} >= v{k}.{TIMESTAMP}" for k in range(len(views)))
    return (f"SELECT e.{key}, e.{TIMESTAMP}, {columns} "
            f"FROM (SELECT DISTINCT {key}, {TIMESTAMP} FROM spine_all) e {joins}"), views


def point_in_time(con: duckdb.DuckDBPyConnection, data_dir, limit: str | None = None) -> str | None:
    """The temp tables `customers` and `items`: the customer and item features as of each
    timestamp of the temp table `spine_all`, read from the feature views' Parquet files.

    The point-in-time join of Feast's get_historical_features (the newest feature row at or before
    the timestamp; the views have no TTL) done by DuckDB on the files Feast reads, so the history
    lists never become Python objects and what does not fit in memory spills to disk;
    tests/test_features.py checks both joins give the same rows. Features are per customer or per
    item, so this joins the distinct (customer, timestamp) and (item, timestamp) rows (tens of
    thousands, not millions); `assemble` joins them back. `limit`: see `_execute`; returns the
    limit it ran under.
    """
    for table, key in (("customers", CUSTOMER_ID), ("items", ITEM)):
        sql, views = _point_in_time_sql(key)
        limit = _execute(con, f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}",
                         {f"v{k}": str(data_dir / f"{name}.parquet") for k, name in enumerate(views)}, limit)
    return limit


def is_current(ws: Workspace, mode: str) -> bool:
    """True when <home>/datasets/<mode> holds every customer and was built from the last features
    run (which `current_features` checks against the warehouse of now)."""
    try:
        recorded = json.loads((ws.home / "datasets" / mode / BUILT_FROM).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("features") == features_id(ws) and recorded.get("max_customers") is None
