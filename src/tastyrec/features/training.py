"""Training sets from Feast's point-in-time joins, and the same features read online for serving.

Both paths end in `finish_frame`: per-pair features from the history lists, defaults for "no
history yet", and the column order of columns.py. So a training row and a serving row of the
same customer, item and snapshot are equal column for column.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from tastyrec.columns import (BRAND, CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM, LABEL, MULTI_HOT, NEVER_DAYS,
                              SPARSE, TIMESTAMP)
from tastyrec.config import WINDOW_DAYS, Workspace
from tastyrec.features import definitions
from tastyrec.features.build import _sql, feature_store, snapshot_times

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


def finish_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Pair features from the history lists, defaults for missing history, columns.py order."""
    con = duckdb.connect()
    try:
        con.register("frame", frame)
        out = con.execute(_sql("pair_features.sql").replace("$never", repr(NEVER_DAYS))).df()
    finally:
        con.close()
    out = out.fillna({k: v for k, v in DENSE_DEFAULTS.items() if k in out})
    for bag in MULTI_HOT:  # a customer with no history has no list: make it an empty one
        out[bag] = [v if isinstance(v, (list, np.ndarray)) else [] for v in out[bag]]
    extra = [LABEL] if LABEL in out else []
    return out[KEYS + extra + FEATURES]


def _spine(con, mode: str, seed: int, train_windows: int) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """(customer_id, menu_item_name, event_timestamp, label, split) rows and the cutoffs used."""
    snapshots = snapshot_times(con, train_windows + 1)
    if mode == "time":
        cutoffs = [s.replace(tzinfo=None) for s in snapshots[:-1]]  # the last snapshot has no future
        sql = (_sql("spine_time.sql").replace("$candidates", _sql("candidates.sql").rstrip().rstrip(";"))
               .replace("$window_days", str(WINDOW_DAYS)))
        spine = con.execute(sql.replace("$cutoffs", "$1"), [cutoffs]).df()
        names = ["train"] * (len(cutoffs) - 2) + ["val", "test"]
        split_of = dict(zip(pd.to_datetime(cutoffs), names))
        spine["split"] = spine[TIMESTAMP].map(split_of)
        by_split = {name: [c.isoformat() for c, n in zip(cutoffs, names) if n == name] for name in SPLITS}
    elif mode == "random":
        as_of = snapshots[-1].replace(tzinfo=None)
        spine = con.execute(_sql("spine_random.sql").replace("$as_of", "$1").replace("$seed", "$2"),
                            [as_of, seed]).df()
        by_split = {name: [as_of.isoformat()] for name in SPLITS}
    else:
        raise ValueError(f"unknown split mode {mode!r}: use 'time' or 'random'")
    spine[TIMESTAMP] = pd.to_datetime(spine[TIMESTAMP]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    return spine, by_split


def build_training_set(ws: Workspace, mode: str = "time", seed: int = 42, train_windows: int = 2,
                       max_customers: int | None = None) -> TrainingSet:
    """Spine -> Feast get_historical_features -> pair features -> <home>/datasets/<mode>/<split>.parquet."""
    from tastyrec.warehouse.load import connect

    started = time.perf_counter()
    con = connect(ws.warehouse, read_only=True)
    try:
        spine, cutoffs = _spine(con, mode, seed, train_windows)
    finally:
        con.close()
    if max_customers:
        keep = np.sort(spine[CUSTOMER_ID].unique())[:max_customers]
        spine = spine[spine[CUSTOMER_ID].isin(keep)]
    frame = finish_frame(point_in_time(feature_store(ws), spine))
    frame["split"] = spine["split"].to_numpy()  # finish_frame keeps the spine's row order
    out_dir = ws.home / "datasets" / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows, positives = {}, {}, {}
    for name in SPLITS:
        part = frame[frame["split"] == name].drop(columns="split")
        part = part.sort_values(KEYS, kind="stable").reset_index(drop=True)
        path = out_dir / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        part.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        paths[name], rows[name], positives[name] = str(path), len(part), int(part[LABEL].sum())
    return TrainingSet(mode=mode, paths=paths, rows=rows, positives=positives, cutoffs=cutoffs,
                       seconds=round(time.perf_counter() - started, 2))


def point_in_time(store, spine: pd.DataFrame) -> pd.DataFrame:
    """The spine with every feature as of its event_timestamp, via Feast's point-in-time join.

    Features are per customer or per item, so Feast joins the distinct (customer, timestamp) and
    (item, timestamp) rows (tens of thousands, not millions) and the result is joined back here.
    """
    def historical(key: str, refs: list[str]) -> pd.DataFrame:
        entities = spine[[key, TIMESTAMP]].drop_duplicates().reset_index(drop=True)
        with contextlib.redirect_stdout(sys.stderr):
            return store.get_historical_features(entity_df=entities, features=refs).to_df()

    customers, items = historical(CUSTOMER_ID, CUSTOMER_REFS), historical(ITEM, MENU_REFS)
    for part in (customers, items):  # Feast may hand timestamps back at another precision
        part[TIMESTAMP] = part[TIMESTAMP].astype(spine[TIMESTAMP].dtype)
    return (spine.merge(customers, on=[CUSTOMER_ID, TIMESTAMP], how="left")
            .merge(items, on=[ITEM, TIMESTAMP], how="left"))


class OnlineFeatures:
    """Reads serving features from the Feast online store, shaped like a training set.

    Loads what does not change between `tastyrec features` runs once: the menu features, the
    candidate items per city and the serving snapshot time.
    """

    def __init__(self, ws: Workspace):
        from tastyrec.warehouse.load import connect

        self.store = feature_store(ws)
        summary = json.loads((ws.feature_repo / "summary.json").read_text())
        self.as_of = pd.Timestamp(datetime.fromisoformat(summary["snapshots"][-1])).tz_convert("UTC")
        con = connect(ws.warehouse, read_only=True)
        try:
            candidates = con.execute(_sql("candidates.sql")).df()
        finally:
            con.close()
        items = sorted(candidates[ITEM].unique())
        menu = self.store.get_online_features(features=MENU_REFS, entity_rows=[{ITEM: i} for i in items]).to_df()
        self.menu = menu.set_index(ITEM)
        self.candidates = candidates.groupby("city")[ITEM].apply(list).to_dict()

    def for_customers(self, customer_ids: list[int], items: list[str] | None = None) -> pd.DataFrame:
        """Features for each customer x (their city's candidate items, or `items`), training-set order."""
        customers = self.store.get_online_features(
            features=CUSTOMER_REFS, entity_rows={CUSTOMER_ID: [int(c) for c in customer_ids]}).to_df()
        known = customers["city"].notna()
        customers = customers[known]
        pairs = [(c, item) for c, city in zip(customers[CUSTOMER_ID], customers["city"])
                 for item in (items if items is not None else self.candidates.get(city, []))]
        frame = pd.DataFrame(pairs, columns=[CUSTOMER_ID, ITEM])
        frame = frame.merge(customers, on=CUSTOMER_ID, how="left").join(self.menu, on=ITEM)
        frame = frame[frame[BRAND].notna()]  # unknown item names are not candidates
        frame[TIMESTAMP] = self.as_of
        return finish_frame(frame.reset_index(drop=True))
