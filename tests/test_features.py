"""The feature store: Feast repo, online values, point-in-time correctness, training sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.columns import (BRAND, CITY, CUSTOMER_ID, DENSE, DENSE_DEFAULTS, ITEM, ITEM_PURCHASE_COUNT, LABEL,
                              MULTI_HOT, NEVER_DAYS, SPARSE, TIMESTAMP)
from tastyrec.config import WINDOW_DAYS, Workspace
from tastyrec.features import definitions
from tastyrec.features.build import build_features, feature_store
from tastyrec.features.online import OnlineFeatures
from tastyrec.features.training import TrainingSet, build_training_set
from tastyrec.warehouse.load import connect


def copy_home(src: Workspace, dst) -> Workspace:
    ws = Workspace.from_env(dst)
    ws.ensure()
    shutil.copy(src.warehouse, ws.warehouse)
    return ws


@pytest.fixture(scope="module")
def feat_ws(small_ws, tmp_path_factory) -> Workspace:
    ws = copy_home(small_ws, tmp_path_factory.mktemp("features"))
    build_features(ws)
    return ws


def parquet(ws: Workspace, name: str) -> pd.DataFrame:
    return pd.read_parquet(ws.feature_repo / "data" / f"{name}.parquet")


@pytest.fixture(scope="module")
def time_split(feat_ws) -> TrainingSet:
    return build_training_set(feat_ws, mode="time", train_windows=2)


def sample_customers(con, n: int) -> list[int]:
    return [c for (c,) in con.execute("SELECT customer_id FROM raw_customer.customer_loyalty "
                                      "ORDER BY hash(customer_id) LIMIT ?", [n]).fetchall()]


# Independent SQL over analytics.orders_v (one row per order line), written from the definitions in
# the README and the feature SQL comments, not from the feature SQL: orders strictly before $ts.
SPEND_SQL = """
    WITH orders AS (SELECT DISTINCT customer_id, order_id, date, order_total FROM analytics.orders_v
                    WHERE customer_id IN (SELECT unnest($customers)) AND order_ts < $ts),
    spans AS (SELECT customer_id, sum(order_total) AS total, min(date) AS first, max(date) AS last
              FROM orders GROUP BY customer_id)
    SELECT customer_id,
           round(total / (year(last) - year(first) + 1), 2) AS avg_yearly_purchase_amount,
           round(total / (12 * (year(last) - year(first)) + month(last) - month(first) + 1), 2)
               AS avg_monthly_purchase_amount,
           -- the seed's Snowflake TIMESTAMPDIFF(WEEK, ...): week boundaries (Mondays) crossed
           round(total / ((date_trunc('week', last)::DATE - date_trunc('week', first)::DATE) // 7 + 1), 2)
               AS avg_weekly_purchase_amount,
           $ts::DATE - last AS days_since_last_order
    FROM spans"""
ITEM_DAYS_SQL = """
    SELECT customer_id, menu_item_name, $ts::DATE - max(date) AS days_since_item_purchase
    FROM analytics.orders_v WHERE customer_id IN (SELECT unnest($customers)) AND order_ts < $ts
    GROUP BY customer_id, menu_item_name"""
BRAND_SHARE_SQL = """
    SELECT customer_id, truck_brand_name, sum(price) / sum(sum(price)) OVER (PARTITION BY customer_id)
               AS brand_spend_share
    FROM analytics.orders_v WHERE customer_id IN (SELECT unnest($customers)) AND order_ts < $ts
    GROUP BY customer_id, truck_brand_name"""
CHECKED = ["avg_yearly_purchase_amount", "avg_monthly_purchase_amount", "avg_weekly_purchase_amount",
           "days_since_last_order", "days_since_item_purchase", "brand_spend_share"]


def expected_features(con, rows: pd.DataFrame, ts: datetime) -> pd.DataFrame:
    """`rows` (customer x item feature rows as of ts) with the independent values of CHECKED as
    `<feature>_sql` columns; "no history yet" takes the documented defaults (columns.DENSE_DEFAULTS)."""
    params = {"customers": sorted({int(c) for c in rows[CUSTOMER_ID]}), "ts": ts.replace(tzinfo=None)}
    merged = rows
    for sql, key in ((SPEND_SQL, [CUSTOMER_ID]), (ITEM_DAYS_SQL, [CUSTOMER_ID, ITEM]),
                     (BRAND_SHARE_SQL, [CUSTOMER_ID, BRAND])):
        found = con.execute(sql, params).df()
        merged = merged.merge(found.rename(columns={c: f"{c}_sql" for c in found.columns if c not in key}),
                              on=key, how="left", validate="many_to_one")
    return merged.fillna({f"{c}_sql": DENSE_DEFAULTS[c] for c in CHECKED})


def differing(merged: pd.DataFrame, col: str, expected: str) -> pd.DataFrame:
    """The rows where feature `col` differs from the independent value in column `expected`."""
    bad = ~np.isclose(merged[col], merged[expected].astype(float), rtol=1e-12, atol=0)
    return merged.loc[bad, [CUSTOMER_ID, ITEM, col, expected]]


def assert_features_equal_sql(con, rows: pd.DataFrame, ts: datetime) -> None:
    merged = expected_features(con, rows, ts)
    for col in CHECKED:
        wrong = differing(merged, col, f"{col}_sql")
        assert wrong.empty, f"{len(wrong)} of {len(merged)} rows differ:\n{wrong.head()}"
    # the sample is not vacuous: items bought and never bought, brands never bought from
    assert (merged["days_since_item_purchase"] < NEVER_DAYS).any() and (merged["brand_spend_share"] == 0).any()
    assert (merged["days_since_last_order"] < NEVER_DAYS).any()


def test_repo_applies_entities_and_views(feat_ws):
    store = feature_store(feat_ws)
    assert {e.name for e in store.list_entities()} >= {"customer", "menu_item"}
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == set(definitions.VIEWS)
    assert all(v.tags["version"] == "v1" and v.description for v in views.values())
    yaml = (feat_ws.feature_repo / "feature_store.yaml").read_text()
    assert "type: duckdb" in yaml and "type: sqlite" in yaml and "entity_key_serialization_version: 3" in yaml
    ts = pq.read_schema(feat_ws.feature_repo / "data" / "purchase_features.parquet").field(TIMESTAMP).type
    assert str(ts) == "timestamp[us, tz=UTC]"


def test_feast_cli_plans_the_generated_repo(feat_ws, tmp_path):
    # the generated features.py must import on its own: `feast plan` runs it in the repo folder
    repo = shutil.copytree(feat_ws.feature_repo, tmp_path / "repo")
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run([str(feast), "plan"], cwd=repo, env={**os.environ, "FEAST_USAGE": "False"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_online_values_equal_the_warehouse(feat_ws):
    online = OnlineFeatures(feat_ws)
    con = connect(feat_ws.warehouse, read_only=True)
    sample = sample_customers(con, 6)
    rows = online.for_customers(sample)
    # independent SQL over the raw tables (not the feature SQL): orders, spend and item counts
    truth = con.execute("""
        SELECT oh.customer_id, m.menu_item_name, count(DISTINCT oh.order_id) AS n
        FROM raw_pos.order_header oh JOIN raw_pos.order_detail od USING (order_id)
        JOIN raw_pos.menu m USING (menu_item_id)
        WHERE oh.customer_id IN (SELECT unnest(?)) AND m.item_category <> 'Beverage' GROUP BY ALL""",
                        [sample]).df()
    merged = rows.merge(truth, on=[CUSTOMER_ID, ITEM], how="left").fillna({"n": 0})
    assert (merged[ITEM_PURCHASE_COUNT] == merged["n"]).all()
    orders = con.execute("""SELECT customer_id, count(*) AS n, sum(order_total)::DOUBLE AS total
                            FROM raw_pos.order_header WHERE customer_id IN (SELECT unnest(?)) GROUP BY 1""",
                         [sample]).df().set_index(CUSTOMER_ID)
    per_customer = rows.groupby(CUSTOMER_ID).first()
    for c in orders.index:
        assert per_customer.loc[c, "order_count"] == orders.loc[c, "n"]
        bought = set(truth.loc[truth[CUSTOMER_ID] == c, ITEM])
        assert set(per_customer.loc[c, "history_items"]) == bought
    city = con.execute("SELECT city FROM raw_customer.customer_loyalty WHERE customer_id = ?", [sample[0]]).fetchone()[0]
    assert (rows.loc[rows[CUSTOMER_ID] == sample[0], CITY] == city).all()


def test_training_rows_and_online_rows_agree_column_for_column(feat_ws):
    # the random split's features are as of the serving snapshot, as online features are
    result = build_training_set(feat_ws, mode="random")
    training = pd.concat([pd.read_parquet(p) for p in result.paths.values()])
    online = OnlineFeatures(feat_ws)
    customers = sorted(training[CUSTOMER_ID].unique())[:5]
    served = online.for_customers(customers)
    assert list(served.columns) == [c for c in training.columns if c != LABEL]
    assert list(served.columns[3:]) == [c for c in SPARSE + DENSE + MULTI_HOT if c != ITEM]
    key = [CUSTOMER_ID, ITEM]
    both = training.drop(columns=LABEL).merge(served, on=key, suffixes=("_t", "_s"))
    assert len(both) == len(served) > 0
    for col in served.columns:
        if col in key:
            continue
        left, right = both[f"{col}_t"], both[f"{col}_s"]
        if col in MULTI_HOT:
            assert [list(v) for v in left] == [list(v) for v in right], col
        elif col == TIMESTAMP:
            assert (pd.to_datetime(left) == pd.to_datetime(right)).all()
        else:
            assert left.tolist() == right.tolist(), col


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal column for column and row for row (history bags compared as lists)."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if col in MULTI_HOT:
            assert [list(v) for v in a[col]] == [list(v) for v in b[col]], col
        elif col == TIMESTAMP:
            assert (pd.to_datetime(a[col]) == pd.to_datetime(b[col])).all()
        else:
            assert a[col].tolist() == b[col].tolist(), col


@pytest.mark.parametrize("items", [None, ["Lobster Mac & Cheese", "no such item", "Chicago Dog"]])
def test_serving_rows_equal_the_sql_assembly_of_training_sets(feat_ws, items):
    """Serving builds rows with numpy (a query costs more than one customer's ~40 rows); they must
    be the rows `features.training.assemble`, the SQL of every training set, gives."""
    import duckdb
    import pyarrow as pa

    from tastyrec.features.training import assemble

    online = OnlineFeatures(feat_ws)
    con = connect(feat_ws.warehouse, read_only=True)
    ids = sample_customers(con, 25) + [10**9]  # an unknown customer gives no rows
    con.close()
    customers = online.customers(ids)
    fast = online.candidate_rows(customers, items)
    pairs = [(c, i) for c, city in zip(customers.column(CUSTOMER_ID).to_pylist(), customers.column(CITY).to_pylist())
             if city is not None for i in (items if items is not None else online.candidates[city])
             if i in online.menu.index]
    stamp = pa.array([online.as_of] * len(pairs), pa.timestamp("us", tz="UTC"))
    spine = pa.table({CUSTOMER_ID: pa.array([c for c, _ in pairs], pa.int64()),
                      ITEM: pa.array([i for _, i in pairs], pa.string()), TIMESTAMP: stamp})
    menu = online.menu.reset_index().assign(**{TIMESTAMP: online.as_of})
    with duckdb.connect() as db:
        by_sql = assemble(db, spine, customers, menu).df()
    assert len(fast) == len(pairs) > 0 and 10**9 not in set(fast[CUSTOMER_ID])
    assert_same_rows(fast, by_sql)


def test_time_split_labels_come_from_the_window_after_the_cutoff(feat_ws, time_split):
    test = pd.read_parquet(time_split.paths["test"])
    cutoff = datetime.fromisoformat(time_split.cutoffs["test"][0])
    assert (test[TIMESTAMP].dt.tz_localize(None) == cutoff).all()
    assert len(time_split.cutoffs["train"]) == 2 and time_split.rows["train"] > time_split.rows["test"]
    con = connect(feat_ws.warehouse, read_only=True)
    # independent SQL: the food items each customer signed up before the cutoff bought in the window
    bought = con.execute("""
        SELECT DISTINCT o.customer_id, o.menu_item_name FROM analytics.orders_v o
        JOIN raw_customer.customer_loyalty c ON c.customer_id = o.customer_id
        WHERE o.date >= $cutoff::DATE AND o.date < $cutoff::DATE + $days AND c.sign_up_date < $cutoff::DATE
          AND o.menu_item_name IN (SELECT menu_item_name FROM raw_pos.menu WHERE item_category <> 'Beverage')""",
                         {"cutoff": cutoff, "days": WINDOW_DAYS}).fetchall()
    positives = test.loc[test[LABEL] == 1, [CUSTOMER_ID, ITEM]]
    assert len(bought) > 1000
    assert set(positives.itertuples(index=False, name=None)) == set(bought)
    assert len(positives) == len(bought)  # and each pair once
    # history features at the cutoff never count the window's purchases
    assert (test["days_since_item_purchase"] >= 1).all()


def test_history_features_equal_independent_sql_at_the_cutoff_and_online(feat_ws, time_split):
    con = connect(feat_ws.warehouse, read_only=True)
    sample = sample_customers(con, 12)
    # training rows at the test cutoff, through Feast's point-in-time join
    test = pd.read_parquet(time_split.paths["test"])
    assert_features_equal_sql(con, test[test[CUSTOMER_ID].isin(sample)],
                              datetime.fromisoformat(time_split.cutoffs["test"][0]))
    # the online store at the serving snapshot
    online = OnlineFeatures(feat_ws)
    assert_features_equal_sql(con, online.for_customers(sample), online.as_of.to_pydatetime())


def test_a_late_order_never_changes_earlier_features(feat_ws, tmp_path):
    ws = copy_home(feat_ws, tmp_path / "late")
    build_features(ws)
    before = build_training_set(ws, mode="time", train_windows=1)
    test_before = pd.read_parquet(before.paths["test"])
    cutoff = datetime.fromisoformat(before.cutoffs["test"][0])
    customer, item = int(test_before[CUSTOMER_ID].iloc[0]), test_before[ITEM].iloc[0]
    con = connect(ws.warehouse)
    # a new order one hour after the cutoff, at a truck of the item's brand in the customer's city
    con.execute("""
        INSERT INTO raw_pos.order_header (order_id, truck_id, location_id, customer_id, order_ts,
                                          order_currency, order_amount, order_total)
        SELECT 999999999, t.truck_id, l.location_id, c.customer_id, ?, 'USD', 50, 50
        FROM raw_customer.customer_loyalty c
        JOIN raw_pos.truck t ON t.primary_city = c.city
        JOIN raw_pos.menu m ON m.menu_type_id = t.menu_type_id AND m.menu_item_name = ?
        JOIN raw_pos.location l ON l.city = c.city
        WHERE c.customer_id = ? LIMIT 1""", [cutoff + timedelta(hours=1), item, customer])
    con.execute("""INSERT INTO raw_pos.order_detail (order_detail_id, order_id, menu_item_id, line_number,
                                                    quantity, unit_price, price)
                   SELECT 999999999, 999999999, menu_item_id, 1, 5, 10, 50 FROM raw_pos.menu
                   WHERE menu_item_name = ? LIMIT 1""", [item])
    con.close()
    build_features(ws)
    after = build_training_set(ws, mode="time", train_windows=1)
    test_after = pd.read_parquet(after.paths["test"])
    features = [c for c in test_before.columns if c != LABEL]
    pd.testing.assert_frame_equal(test_before[features], test_after[features])
    row = (test_after[CUSTOMER_ID] == customer) & (test_after[ITEM] == item)
    assert test_after.loc[row, LABEL].item() == 1  # the late order is a label, not a feature
    online = OnlineFeatures(ws).for_customers([customer], items=[item])
    assert online["days_since_item_purchase"].item() <= 91  # the serving snapshot does see it


def test_rebuilding_is_idempotent(feat_ws, tmp_path):
    ws = copy_home(feat_ws, tmp_path / "again")
    first = build_features(ws)
    tables = {name: parquet(ws, name) for name in definitions.VIEWS}
    rows = OnlineFeatures(ws).for_customers([1, 2, 3])
    second = build_features(ws)
    assert first.rows == second.rows and first.snapshots == second.snapshots
    for name in definitions.VIEWS:
        pd.testing.assert_frame_equal(tables[name], parquet(ws, name))
    pd.testing.assert_frame_equal(rows, OnlineFeatures(ws).for_customers([1, 2, 3]))
    assert len(feature_store(ws).list_feature_views()) == len(definitions.VIEWS)


def test_features_cli_json(feat_ws, tmp_path):
    ws = copy_home(feat_ws, tmp_path / "cli")
    result = CliRunner().invoke(app, ["--home", str(ws.home), "features", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload["rows"]) == set(definitions.VIEWS) and payload["seconds"] > 0
    missing = CliRunner().invoke(app, ["--home", str(tmp_path / "empty"), "features"])
    assert missing.exit_code == 1 and "tastyrec setup" in missing.output


def test_history_in_customer_parts_equals_one_query(feat_ws, tmp_path, monkeypatch) -> None:
    """customer_history is computed for a range of customer ids at a time (at N = 222,000 one
    query needed more than DuckDB's 6 GB); the parts together are the table one query gives."""
    from tastyrec.features import build

    ws = copy_home(feat_ws, tmp_path / "parts")
    monkeypatch.setattr(build, "HISTORY_CUSTOMERS", 400)  # 1,500 customers: 4 parts
    con = connect(ws.warehouse, read_only=True)
    try:
        parts = build.customer_parts(con)
    finally:
        con.close()
    assert len(parts) == 4 and parts[0][0] == build.ALL_CUSTOMERS[0] and parts[-1][1] == build.ALL_CUSTOMERS[1]
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    build.write_feature_tables(ws, ws.feature_repo)  # over the copy's own run
    for name in definitions.VIEWS:
        parted, whole = parquet(ws, name), parquet(feat_ws, name)
        assert list(parted.columns) == list(whole.columns) and len(parted) == len(whole), name
        for col in whole.columns:
            a, b = parted[col].to_numpy(), whole[col].to_numpy()
            if len(b) and isinstance(b[0], np.ndarray) and b[0].dtype.kind == "f":
                # DuckDB's parallel sums are not bit-stable from run to run, in one query or several
                assert [len(x) for x in a] == [len(x) for x in b], (name, col)
                assert np.allclose(np.concatenate(a), np.concatenate(b), rtol=1e-12, atol=0), (name, col)
            else:
                pd.testing.assert_series_equal(parted[col], whole[col], check_exact=True, obj=f"{name}.{col}")


def test_basket_shares_are_tifu_knns_own_vector_at_the_cutoff_and_online(feat_ws, time_split):
    """item_order_share, item_basket_decay and item_last_baskets, checked against TIFU-KNN's user
    vectors with one group (baselines.tifu_vectors, m = 1: each basket weighted rb^b / T) over the
    same orders, read independently (evaluate.baskets_before), normalised by sum(rb^b)."""
    from tastyrec.baselines import BASKET, ORDERED_AT, tifu_vectors
    from tastyrec.evaluate import baskets_before

    con = connect(feat_ws.warehouse, read_only=True)
    sample = sample_customers(con, 40)
    con.close()
    test = pd.read_parquet(time_split.paths["test"])
    online = OnlineFeatures(feat_ws)
    for rows, ts in ((test[test[CUSTOMER_ID].isin(sample)], pd.Timestamp(time_split.cutoffs["test"][0])),
                     (online.for_customers(sample), online.as_of)):
        baskets = baskets_before(feat_ws, np.array(sample), ts)
        count = baskets.drop_duplicates([CUSTOMER_ID, BASKET]).groupby(CUSTOMER_ID).size()
        for feature, rb in (("item_order_share", 1.0), ("item_basket_decay", 0.9), ("item_last_baskets", 0.5)):
            customers, items, vectors = tifu_vectors(baskets, rb=rb, rg=1.0, m=1)
            t = count.reindex(customers).to_numpy()
            total = (1 - rb ** t) / (1 - rb) if rb < 1 else t  # sum of rb^b over b = 0..T-1
            expected = pd.DataFrame(vectors.multiply((t / total)[:, None]).toarray(),
                                    index=pd.Index(customers, name=CUSTOMER_ID), columns=pd.Index(items, name=ITEM))
            want = expected.stack().rename("want").reset_index()
            merged = rows.merge(want, on=[CUSTOMER_ID, ITEM], how="left").fillna({"want": 0.0})
            assert np.allclose(merged[feature], merged["want"], atol=1e-9), feature
            assert (merged[feature] > 0).any() and (merged[feature] == 0).any()


def test_collaborative_inputs_are_those_of_each_rows_own_snapshot(feat_ws, time_split):
    """item_recent_popularity, item_ease_score and item_cosine_score of a row come from every customer's purchases
    before the row's own timestamp (one snapshot_table per cutoff, over
    bags read here independently), for training rows of two cutoffs and the online rows."""
    import pyarrow as pa

    from tastyrec.collaborative import BagWeights, snapshot_table

    train = pd.read_parquet(time_split.paths["train"])
    online = OnlineFeatures(feat_ws)
    con = connect(feat_ws.warehouse, read_only=True)
    sample = sample_customers(con, 30)
    cases = [(train[train[TIMESTAMP] == ts], ts) for ts in sorted(train[TIMESTAMP].unique())]
    assert len(cases) == 2
    cases.append((online.for_customers(sample), online.as_of))
    seen = []
    for rows, ts in cases:
        rows = rows[rows[CUSTOMER_ID].isin(sample)]
        cutoff = pd.Timestamp(ts).tz_convert("UTC").tz_localize(None).to_pydatetime()
        bags = con.execute("""
            WITH buyers AS (SELECT DISTINCT customer_id FROM raw_pos.order_header
                            WHERE customer_id IS NOT NULL AND order_ts < $ts),
            items AS (SELECT oh.customer_id, m.menu_item_name, min(date_diff('day', oh.order_ts, $ts)) AS days,
                             count(DISTINCT oh.order_id) AS orders
                      FROM raw_pos.order_header oh JOIN raw_pos.order_detail od USING (order_id)
                      JOIN raw_pos.menu m USING (menu_item_id)
                      WHERE oh.order_ts < $ts AND m.item_category <> 'Beverage' GROUP BY ALL)
            SELECT b.customer_id, list(menu_item_name ORDER BY menu_item_name) FILTER (menu_item_name IS NOT NULL),
                   list(days::DOUBLE ORDER BY menu_item_name) FILTER (menu_item_name IS NOT NULL),
                   list(orders::DOUBLE ORDER BY menu_item_name) FILTER (menu_item_name IS NOT NULL)
            FROM buyers b LEFT JOIN items USING (customer_id) GROUP BY ALL ORDER BY 1""", {"ts": cutoff}).fetchall()
        expected = snapshot_table(pd.Timestamp(ts), pa.array([b or [] for _, b, _, _ in bags], pa.list_(pa.string())),
                                  pa.array([d or [] for _, _, d, _ in bags], pa.list_(pa.float64())),
                                  WINDOW_DAYS).to_pandas().set_index(ITEM)
        want = rows[ITEM].map(expected["item_recent_popularity"]).fillna(0.0)
        assert np.allclose(rows["item_recent_popularity"], want, atol=1e-12), ts
        bag_of = {c: b or [] for c, b, _, _ in bags}
        orders_of = {c: n or [] for c, _, _, n in bags}
        weights, buyers = BagWeights(expected), sorted(bag_of)
        scores = weights.scores(pa.array([bag_of[c] for c in buyers], pa.list_(pa.string())),
                                {"history_item_orders": pa.array([orders_of[c] for c in buyers], pa.list_(pa.float64()))})
        who, what = pd.Index(buyers).get_indexer(rows[CUSTOMER_ID]), pd.Index(weights.items).get_indexer(rows[ITEM])
        want = {name: np.where((who >= 0) & (what >= 0), table[who, what], 0.0) for name, table in scores.items()}
        for col, values in want.items():
            assert np.allclose(rows[col], values, atol=1e-9), (col, ts)
        assert (rows["item_recent_popularity"] > 0).any() and (rows["item_ease_score"] != 0).any()
        assert (rows["item_cosine_score"] > 0).any()
        seen.append(expected["item_recent_popularity"].sum())
    con.close()
    assert len(set(seen)) == 3  # three different snapshots: each row read its own


def test_point_in_time_rows_equal_feasts_historical_features(feat_ws):
    """Training sets join the feature views as of each timestamp with DuckDB on the views' Parquet
    files; Feast's get_historical_features on the same entities must give the same rows, at the
    snapshots, between them and before the first."""
    import duckdb
    import pyarrow as pa

    from tastyrec.features.build import built_features
    from tastyrec.features.training import CUSTOMER_REFS, MENU_REFS, point_in_time

    built = built_features(feat_ws)
    snapshots = sorted(pd.Timestamp(s) for s in built.snapshots)
    stamps = [snapshots[0] - timedelta(days=1), *snapshots, snapshots[1] + timedelta(days=3)]
    con = connect(feat_ws.warehouse, read_only=True)
    ids = sample_customers(con, 30) + [10**9]  # an unknown customer has no features
    items = [i for (i,) in con.execute("SELECT DISTINCT menu_item_name FROM raw_pos.menu ORDER BY 1 LIMIT 12").fetchall()]
    con.close()
    n = len(stamps) * max(len(ids), len(items))
    spine = pa.table({CUSTOMER_ID: pa.array([ids[k % len(ids)] for k in range(n)], pa.int64()),
                      ITEM: pa.array([items[k % len(items)] for k in range(n)], pa.string()),
                      TIMESTAMP: pa.array([stamps[k % len(stamps)] for k in range(n)], pa.timestamp("us", tz="UTC"))})
    store = feature_store(feat_ws)
    with duckdb.connect() as db:
        db.register("spine_rows", spine)
        db.execute("CREATE TEMP TABLE spine_all AS SELECT * FROM spine_rows")
        point_in_time(db, feat_ws.feature_repo / "data")
        for table, key, refs in (("customers", CUSTOMER_ID, CUSTOMER_REFS), ("items", ITEM, MENU_REFS)):
            ours = db.execute(f"SELECT * FROM {table}").df().sort_values([key, TIMESTAMP], ignore_index=True)
            entities = ours[[key, TIMESTAMP]]
            feasts = store.get_historical_features(entity_df=entities, features=refs).to_df()
            feasts = feasts[list(ours.columns)].sort_values([key, TIMESTAMP], ignore_index=True)
            assert len(ours) == len(feasts) == len(set(zip(spine[key].to_pylist(), spine[TIMESTAMP].to_pylist())))
            assert ours.drop(columns=[TIMESTAMP]).notna().any().all()  # every feature found somewhere
            for col in ours.columns:
                if col == TIMESTAMP:
                    assert (pd.to_datetime(ours[col], utc=True) == pd.to_datetime(feasts[col], utc=True)).all()
                    continue
                left = [list(v) if isinstance(v, (list, np.ndarray)) else (None if pd.isna(v) else v) for v in ours[col]]
                right = [list(v) if isinstance(v, (list, np.ndarray)) else (None if pd.isna(v) else v)
                         for v in feasts[col]]
                assert left == right, (table, col)


def test_a_training_set_that_outgrows_its_memory_estimate_is_built_under_a_larger_limit(
        feat_ws, time_split, tmp_path, monkeypatch) -> None:
    """The DuckDB limit comes from the spine's rows; where the history lists are longer than the
    estimate assumed (Ta-Feng, 400 items), a split that runs out of memory is built again under
    twice the limit: the same rows as under a limit that was big enough from the start."""
    from tastyrec.features import training

    ws = Workspace.from_env(shutil.copytree(feat_ws.home, tmp_path / "home"))
    monkeypatch.delenv("TASTYREC_DUCKDB_MEMORY", raising=False)
    limits = []
    monkeypatch.setattr(training, "training_set_memory", lambda rows: "1.5GB" if rows == 0 else "0.01GB")
    real = training._execute
    monkeypatch.setattr(training, "_execute", lambda *a: limits.append(real(*a)) or limits[-1])
    built = build_training_set(ws, mode="time", train_windows=2)
    assert float(limits[0].removesuffix("GB")) > 0.01  # it ran out under 10 MB, then grew
    for split in training.SPLITS:
        pd.testing.assert_frame_equal(pd.read_parquet(built.paths[split]), pd.read_parquet(time_split.paths[split]))
