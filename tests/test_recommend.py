"""The recommendation engine, campaigns and the `recommend` / `campaigns` commands, checked
against independent SQL on the warehouse."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from tastyrec import campaigns, recommend
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.recommend import Engine, Filters, RecommendError
from tastyrec.warehouse.load import connect

from test_warehouse import held_open, squeeze


@pytest.fixture(scope="module")
def engine(trained_ws) -> Engine:
    return Engine(trained_ws)


@pytest.fixture
def own_ws(trained_ws, tmp_path) -> Workspace:
    """A copy of the trained workspace, for tests that save campaigns."""
    return Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path / "home"))


def sql(ws: Workspace, query: str, params: list | None = None) -> list[tuple]:
    con = connect(ws.warehouse, read_only=True)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def some_customers(ws: Workspace, n: int = 8) -> list[int]:
    """Customers with at least two food purchases, so histories and flags have something to do."""
    return [c for (c,) in sql(ws, "SELECT customer_id FROM analytics.orders_v WHERE customer_id IS NOT NULL "
                                  "GROUP BY 1 HAVING count(DISTINCT menu_item_name) >= 3 ORDER BY 1 LIMIT ?", [n])]


def test_top_k_of_each_customer_ranks_their_city_candidates(engine, trained_ws) -> None:
    ids = some_customers(trained_ws)
    result = engine.recommend(customer_ids=ids + [10**9], top_k=5)
    assert [c.customer_id for c in result.customers] == sorted(ids)
    assert result.unknown_customers == [10**9] and result.model["alias"] == "champion"
    for c in result.customers:
        city, country = sql(trained_ws, "SELECT city, country FROM raw_customer.customer_loyalty "
                                        "WHERE customer_id = ?", [c.customer_id])[0]
        assert (c.city, c.country) == (city, country)
        candidates = {i for (i,) in sql(trained_ws, "SELECT m.menu_item_name FROM raw_pos.truck t JOIN raw_pos.menu m "
                                                    "USING (menu_type_id) WHERE t.primary_city = ? AND "
                                                    "m.item_category <> 'Beverage'", [city])}
        recs = c.recommendations
        assert [r["rank"] for r in recs] == [1, 2, 3, 4, 5]
        assert {r["menu_item_name"] for r in recs} <= candidates
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        for a, b in zip(recs, recs[1:]):  # equal scores: by item name
            assert a["score"] > b["score"] or a["menu_item_name"] < b["menu_item_name"]
        menu = dict(sql(trained_ws, "SELECT menu_item_name, truck_brand_name FROM raw_pos.menu"))
        assert all(menu[r["menu_item_name"]] == r["truck_brand_name"] for r in recs)


def test_history_is_the_warehouse_purchases_most_recent_first(engine, trained_ws) -> None:
    ids = some_customers(trained_ws, 5)
    for c in engine.recommend(customer_ids=ids).customers:
        expected = sql(trained_ws, "SELECT menu_item_name, count(DISTINCT order_id), max(date) FROM analytics.orders_v "
                                   "JOIN raw_pos.menu m USING (menu_item_name) WHERE customer_id = ? AND "
                                   "m.item_category <> 'Beverage' GROUP BY 1 ORDER BY 3 DESC, 1", [c.customer_id])
        got = [(h["menu_item_name"], h["orders"], date.fromisoformat(h["last_purchase"])) for h in c.history]
        assert got == [(item, n, last) for item, n, last in expected]


def test_filters_are_or_within_and_across(engine, trained_ws) -> None:
    (country,), = sql(trained_ws, "SELECT country FROM raw_customer.customer_loyalty GROUP BY 1 ORDER BY count(*) "
                                  "DESC LIMIT 1")
    cities = [c for (c,) in sql(trained_ws, "SELECT DISTINCT city FROM raw_customer.customer_loyalty "
                                            "WHERE country = ? ORDER BY 1", [country])]
    result = engine.recommend(filters=Filters(country=(country, "Atlantis"), city=tuple(cities[:2])), top_k=1)
    expected = [c for (c,) in sql(trained_ws, "SELECT customer_id FROM raw_customer.customer_loyalty WHERE country "
                                              "IN (?, ?) AND city IN (?, ?) ORDER BY 1",
                                  [country, "Atlantis", *cities[:2]])]
    assert result.selected == len(expected) > 0
    assert [c.customer_id for c in result.customers] == expected
    assert {c.city for c in result.customers} <= set(cities[:2])


def test_brand_and_flags_keep_only_what_they_promise(engine, trained_ws) -> None:
    ids = some_customers(trained_ws, 20)
    result = engine.recommend(customer_ids=ids, filters=Filters(trucks_not_visited=True, items_not_ordered=True),
                              top_k=10)
    assert result.customers
    for c in result.customers:
        bought = {i for (i,) in sql(trained_ws, "SELECT DISTINCT menu_item_name FROM analytics.orders_v "
                                                "WHERE customer_id = ?", [c.customer_id])}
        visited = {b for (b,) in sql(trained_ws, "SELECT DISTINCT truck_brand_name FROM analytics.orders_v "
                                                 "WHERE customer_id = ?", [c.customer_id])}
        for r in c.recommendations:
            assert r["menu_item_name"] not in bought and r["truck_brand_name"] not in visited
    brand = result.customers[0].recommendations[0]["truck_brand_name"]
    only = engine.recommend(customer_ids=ids, filters=Filters(brand=(brand,)), top_k=10)
    assert only.customers and all(r["truck_brand_name"] == brand for c in only.customers for r in c.recommendations)


def test_empty_selections_say_why(engine) -> None:
    nobody = engine.recommend(filters=Filters(city=("O'Brien", "x' OR '1'='1")))
    assert nobody.customers == [] and nobody.selected == 0 and nobody.message == "no customer matches the filters"
    unknown = engine.recommend(customer_ids=[10**9, 10**9 + 1])
    assert unknown.message == "none of the customer ids is known: 1000000000, 1000000001"
    no_brand = engine.recommend(filters=Filters(brand=("No Such Brand",)), top_k=1)
    assert no_brand.selected > 0 and not no_brand.customers
    assert "none has a candidate item left" in no_brand.message
    with pytest.raises(RecommendError, match="top_k"):
        engine.recommend(customer_ids=[1], top_k=0)


def independent_scores(ws: Workspace, rows, explore: bool = False) -> np.ndarray:
    """P(purchase) of the champion for `rows`, computed without the engine or Predictor.predict:
    the training run's own model folder (not the registry's cached download), its saved
    preprocessing and the model's forward."""
    import mlflow
    import torch

    from tastyrec.model import load_model
    from tastyrec.preprocess import Preprocessor
    from tastyrec.registry import resolve
    from tastyrec.registry.tracking import client

    bound = client(ws)
    mv = bound.get_model_version("tastyrec-dlrm", str(resolve(ws, "champion")))
    folder = Path(bound.get_run(mv.run_id).data.tags["tastyrec.model_dir"])
    pre = Preprocessor.from_dict(json.loads((folder / "preprocess.json").read_text()))
    model, _ = load_model(folder / "model.pt")
    with torch.no_grad():
        inputs = pre.transform(rows).inputs()
        # cross-sell (items new to the customer) is ranked by the explore head, the second logit
        return torch.sigmoid(model.heads(*inputs)[:, 1] if explore else model.eval()(*inputs)).numpy()


@pytest.mark.parametrize("filters", [Filters(), Filters(items_not_ordered=True), Filters(trucks_not_visited=True),
                                     Filters(brand=("Freezing Point", "Smoky BBQ", "Kitakata Ramen Bar"))],
                         ids=["none", "items_not_ordered", "trucks_not_visited", "brand"])
def test_the_engine_ranks_by_scores_computed_independently(engine, trained_ws, filters) -> None:
    ids = some_customers(trained_ws, 40)
    rows = engine.online.for_customers(ids)
    rows = rows.assign(score=independent_scores(trained_ws, rows, explore=filters.items_not_ordered))
    result = engine.recommend(customer_ids=ids, filters=filters, top_k=50)
    assert len(result.customers) >= 30
    for c in result.customers:
        mine = rows[rows["customer_id"] == c.customer_id]
        if filters.items_not_ordered:
            mine = mine[mine["item_purchase_count"] == 0]
        if filters.trucks_not_visited:
            mine = mine[[b not in set(h) for b, h in zip(mine["truck_brand_name"], mine["history_brands"])]]
        if filters.brand:
            mine = mine[mine["truck_brand_name"].isin(filters.brand)]
        expected = mine.sort_values(["score", "menu_item_name"], ascending=[False, True])
        got = c.recommendations
        assert [r["menu_item_name"] for r in got] == expected["menu_item_name"].tolist(), c.customer_id
        assert np.allclose([r["score"] for r in got], expected["score"], atol=1e-6)


def test_the_engine_feeds_the_model_the_tensors_of_the_frame_path(engine) -> None:
    """The engine builds its tensors from the online rows by level (Preprocessor.transform_pairs),
    never through a frame; for every customer they must be the tensors that the rows as a frame
    (what training sets, evaluation and /score use) give, bit for bit, and so the scores."""
    customers = engine.online.customers(engine.directory.frame["customer_id"].tolist())
    pairs = engine.online.pairs(customers)
    pre = engine.predictor.preprocessor
    fast, slow = pre.transform_pairs(pairs).inputs(), pre.transform(engine.online.frame(pairs)).inputs()
    assert len(pairs) > 1000 and fast[0].shape == slow[0].shape
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert all(torch.equal(fast[2][name], slow[2][name]) for name in slow[2])
    some = pairs.take(np.arange(0, len(pairs), 7))  # what a filter leaves: any subset of the rows
    assert np.array_equal(engine.predictor.predict_pairs(some), engine.predictor.predict(engine.online.frame(some)))


def test_a_big_selection_reads_the_snapshot_in_bulk_as_the_online_store_has_it(engine, monkeypatch) -> None:
    """Selections of more than BULK_FROM customers read the features run's Parquet (the newest
    row of each view at the serving snapshot), not the online store: the same rows for every
    customer, so the same recommendations."""
    ids = engine.directory.frame["customer_id"].tolist()
    wanted = ids[::-1] + [10**9]  # any order; an unknown customer gets a row of nulls, as online
    tables = list(engine.online.snapshot(wanted, 64))
    assert [len(t) for t in tables[:-1]] == [64] * (len(tables) - 1) and len(tables) > 3
    bulk, online = pa.concat_tables(tables), engine.online.customers(wanted)
    assert sorted(bulk.column_names) == sorted(online.column_names)
    for name in online.column_names:
        assert bulk.column(name).to_pylist() == online.column(name).to_pylist(), name
    filters = Filters(items_not_ordered=True)
    by_lookups = engine.recommend(filters=filters, top_k=4).to_dict()
    monkeypatch.setattr(recommend, "BULK_FROM", 10)

    def lookup(ids):
        raise AssertionError(f"an online lookup of {len(ids)} customers in a bulk selection")

    monkeypatch.setattr(engine.online, "customers", lookup)
    by_bulk = engine.recommend(filters=filters, top_k=4).to_dict()
    assert len(by_bulk["customers"]) > 300
    assert {**by_bulk, "seconds": 0} == {**by_lookups, "seconds": 0}


def test_precomputed_scores_give_the_recommendations_of_the_model(trained_ws, engine, monkeypatch) -> None:
    """Engine(precompute=True) (the service, the app) scores every customer once in the background;
    requests then look their scores up and run no model: the same lists as scoring per request,
    for explicit ids and every filter (scores up to float32 rounding of other batch sizes, as
    between chunk sizes)."""
    fast = Engine(trained_ws, precompute=True)
    assert fast._state.precomputed.ready.wait(120) and fast.scores == "precomputed" and engine.scores == "per request"
    ids = engine.directory.frame["customer_id"].tolist()
    live = {(f, k): engine.recommend(customer_ids=ids[:40] if f == "ids" else None,
                                     filters=Filters() if f == "ids" else f, top_k=k)
            for f, k in [("ids", 3), (Filters(), 5), (Filters(items_not_ordered=True), 4),
                         (Filters(trucks_not_visited=True, city=("Tokyo", "Hamburg", "Mumbai")), 3),
                         (Filters(brand=("Freezing Point", "Smoky BBQ"), items_not_ordered=True), 2)]}
    one_by_one = [engine.recommend(customer_ids=[c], filters=Filters(items_not_ordered=True)) for c in ids[:30]]

    # scores that do not cover every row of a request are not used (None: the model runs), nor unready ones
    some = recommend.Precomputed()
    assert some.scores(fast.online.pairs(fast.online.customers(ids[:2])), False) is None
    some.compute(fast.online, engine.predictor, ids[:5], 2)
    assert some.scores(fast.online.pairs(fast.online.customers(ids[:2])), False) is not None
    assert some.scores(fast.online.pairs(fast.online.customers(ids[4:7])), False) is None

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran for a request with precomputed scores")

    monkeypatch.setattr(fast.predictor, "predict_pairs", no_model)
    for (f, k), expected in live.items():
        got = fast.recommend(customer_ids=ids[:40] if f == "ids" else None, filters=Filters() if f == "ids" else f,
                             top_k=k)
        assert len(got.customers) > 20 and got.without_recommendations == expected.without_recommendations
        assert [c.customer_id for c in got.customers] == [c.customer_id for c in expected.customers]
        for a, b in zip(got.customers, expected.customers):
            assert a.history == b.history
            assert [r["menu_item_name"] for r in a.recommendations] == [r["menu_item_name"] for r in b.recommendations]
            assert np.allclose([r["score"] for r in a.recommendations], [r["score"] for r in b.recommendations],
                               atol=1e-6)
    for expected in one_by_one:
        got = fast.recommend(customer_ids=[expected.customers[0].customer_id], filters=Filters(items_not_ordered=True))
        assert [r["menu_item_name"] for r in got.customers[0].recommendations] == \
            [r["menu_item_name"] for r in expected.customers[0].recommendations]


def test_recommend_all_with_save_streams_every_customer_into_the_campaign(own_ws, monkeypatch) -> None:
    """`recommend --all --save`: the lists go to the campaign a chunk at a time (not printed), with a
    progress bar; what is saved is what the engine recommends to every customer."""
    monkeypatch.setattr(recommend, "CHUNK_CUSTOMERS", 50)
    done = CliRunner().invoke(app, ["--home", str(own_ws.home), "recommend", "--all", "--top-k", "2", "--save", "all",
                                      "--holdout", "0"])  # everyone in the mailing files
    assert done.exit_code == 0, done.output
    assert "scoring customers" in done.stderr and "saved campaign 'all'" in done.stdout
    assert "recommendations (chance" not in done.stdout  # no table of every customer
    expected = Engine(own_ws).recommend(top_k=2)
    saved = sql(own_ws, "SELECT customer_id, rank, menu_item_name, score FROM ml.recommendations ORDER BY 1, 2")
    want = [(c.customer_id, r["rank"], r["menu_item_name"]) for c in expected.customers for r in c.recommendations]
    assert [row[:3] for row in saved] == want and len(saved) == 2 * expected.served > 600
    [campaign] = campaigns.list_campaigns(own_ws)
    # the stage files are mailing files: one row per customer
    assert campaign.customers == expected.served and pd.read_csv(campaign.files[1]).shape[0] == expected.served
    refused = CliRunner().invoke(app, ["--home", str(own_ws.home), "recommend", "--all", "--city", "Tokyo"])
    assert refused.exit_code == 1 and "--all selects every customer" in refused.output


def test_the_top_item_is_the_highest_scoring_one_when_the_answer_is_known(trained_ws) -> None:
    """A model whose scores are known (each item's name length, a per-customer tie-break) in the
    engine: each customer's top item is the candidate with the longest name."""
    class Known:
        kind = "known"

        def predict_pairs(self, pairs, explore=False):
            names = pd.Series(pairs.column("menu_item_name"))
            return (names.str.len() + pairs.ids[pairs.customer] % 7 / 100).to_numpy(np.float32)

    engine = Engine(trained_ws)
    engine._state = replace(engine._state, predictor=Known())
    ids = some_customers(trained_ws, 20)
    result = engine.recommend(customer_ids=ids, top_k=2)
    for c in result.customers:
        (city,), = sql(trained_ws, "SELECT city FROM raw_customer.customer_loyalty WHERE customer_id = ?",
                       [c.customer_id])
        names = sorted({n for (n,) in sql(trained_ws, "SELECT m.menu_item_name FROM raw_pos.truck t JOIN raw_pos.menu m "
                                                      "USING (menu_type_id) WHERE t.primary_city = ? AND "
                                                      "m.item_category <> 'Beverage'", [city])})
        longest = sorted(names, key=lambda n: (-len(n), n))[:2]
        assert [r["menu_item_name"] for r in c.recommendations] == longest
        assert c.recommendations[0]["score"] == pytest.approx(len(longest[0]) + c.customer_id % 7 / 100)


def test_a_selection_over_several_chunks_gives_every_customer(trained_ws, engine) -> None:
    """The engine scores a large selection in chunks of customers: with chunks of 37, the 400
    customers of the workspace come back complete and as with one chunk."""
    small = Engine(trained_ws, chunk_customers=37)
    for filters in (Filters(), Filters(items_not_ordered=True, brand=("Freezing Point", "Smoky BBQ"))):
        chunked, whole = small.recommend(filters=filters), engine.recommend(filters=filters)
        assert chunked.selected == whole.selected == 400
        assert len(chunked.customers) + len(chunked.without_recommendations) == 400
        assert len(chunked.customers) > 2 * 37
        assert [c.customer_id for c in chunked.customers] == [c.customer_id for c in whole.customers]
        for a, b in zip(chunked.customers, whole.customers):  # scores: float32 batches of other sizes
            assert [r["menu_item_name"] for r in a.recommendations] == [r["menu_item_name"] for r in b.recommendations]
            assert np.allclose([r["score"] for r in a.recommendations], [r["score"] for r in b.recommendations],
                               atol=1e-6)
        assert chunked.without_recommendations == whole.without_recommendations


def test_customers_without_candidates_are_reported_with_the_reason(engine, trained_ws) -> None:
    brand = "Freezing Point"
    served = {c for (c,) in sql(trained_ws, "SELECT DISTINCT t.primary_city FROM raw_pos.truck t JOIN raw_pos.menu m "
                                            "USING (menu_type_id) WHERE m.truck_brand_name = ?", [brand])}
    ids = [c for (c,) in sql(trained_ws, "SELECT customer_id FROM raw_customer.customer_loyalty ORDER BY 1 LIMIT 60")]
    place = dict(sql(trained_ws, "SELECT customer_id, city FROM raw_customer.customer_loyalty"))
    result = engine.recommend(customer_ids=ids, filters=Filters(brand=(brand,)))
    missing = {w["customer_id"]: w for w in result.without_recommendations}
    assert {c.customer_id for c in result.customers} == {i for i in ids if place[i] in served}
    assert set(missing) == {i for i in ids if place[i] not in served} != set()
    for cid, w in missing.items():
        assert w == {"customer_id": cid, "city": place[cid], "code": "brand",
                     "reason": f"no truck of the chosen brands serves {place[cid]}"}
    assert result.selected == 60
    assert result.without_counts == {"brand": len(missing)}
    assert result.message == (f"60 match; {len(result.customers)} get a list; {len(missing)} "
                              f"live where no truck of the chosen brands serves")


def test_a_customer_newer_than_the_features_is_reported_not_dropped(own_ws) -> None:
    """A customer added to the warehouse after `tastyrec features` is not in the online store:
    named with what to run, in the engine, the JSON and the terminal."""
    (first,), = sql(own_ws, "SELECT min(customer_id) FROM raw_customer.customer_loyalty")
    con = connect(own_ws.warehouse)
    try:
        con.execute("INSERT INTO raw_customer.customer_loyalty SELECT * REPLACE (10000001 AS customer_id) "
                    "FROM raw_customer.customer_loyalty WHERE customer_id = ?", [first])
    finally:
        con.close()
    result = Engine(own_ws).recommend(customer_ids=[10000001, first])
    assert [c.customer_id for c in result.customers] == [first] and result.selected == 2
    (new,) = result.without_recommendations
    assert new["customer_id"] == 10000001 and new["code"] == "not_in_online_store"
    assert "run `tastyrec features`" in new["reason"] and "run `tastyrec features`" in result.message
    args = ["--home", str(own_ws.home), "recommend", "--customer", "10000001", "--customer", str(first)]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0 and "customer 10000001" in shown.output and "tastyrec features" in shown.output
    payload = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout.strip().splitlines()[-1])
    assert payload["without_recommendations"] == result.without_recommendations


def test_brand_and_trucks_not_visited_through_the_cli(own_ws) -> None:
    """The CLI passes --brand and --trucks-not-visited to the engine (checked against SQL)."""
    runner = CliRunner()
    (city,), = sql(own_ws, "SELECT city FROM raw_customer.customer_loyalty GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    brands = [b for (b,) in sql(own_ws, "SELECT DISTINCT m.truck_brand_name FROM raw_pos.truck t JOIN raw_pos.menu m "
                                        "USING (menu_type_id) WHERE t.primary_city = ? ORDER BY 1", [city])]

    def cli(*args: str) -> dict:
        done = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--city", city, "--top-k", "5",
                                   *args, "--json"])
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout.strip().splitlines()[-1])

    one = cli("--brand", brands[0])
    assert one["customers"] and one["filters"]["brand"] == [brands[0]]
    assert {r["truck_brand_name"] for c in one["customers"] for r in c["recommendations"]} == {brands[0]}
    two = cli("--brand", brands[0], "--brand", brands[1])
    assert {r["truck_brand_name"] for c in two["customers"] for r in c["recommendations"]} == set(brands[:2])
    fresh = cli("--trucks-not-visited")
    assert fresh["filters"]["trucks_not_visited"] is True and fresh["customers"]
    for c in fresh["customers"]:
        visited = {b for (b,) in sql(own_ws, "SELECT DISTINCT truck_brand_name FROM analytics.orders_v "
                                             "WHERE customer_id = ?", [c["customer_id"]])}
        assert not visited & {r["truck_brand_name"] for r in c["recommendations"]}


def test_a_saved_campaign_is_in_the_table_and_the_stage(own_ws) -> None:
    engine = Engine(own_ws)
    result = engine.recommend(customer_ids=some_customers(own_ws, 4), top_k=2)
    first = campaigns.save(own_ws, result, "spring menu")
    second = campaigns.save(own_ws, result, "spring menu")
    assert first.run_id != second.run_id and first.rows == 8
    rows = campaigns.load_campaign(own_ws, first.run_id)
    assert list(rows["rank"]) == [1, 2] * 4 and set(rows["name"]) == {"spring menu"}
    assert json.loads(rows["filters"].iloc[0])["items_not_ordered"] is False
    listed = campaigns.list_campaigns(own_ws)
    assert [c.run_id for c in listed] == sorted([first.run_id, second.run_id], reverse=True)
    assert all(len(c.files) == 2 and c.customers == 4 for c in listed)
    import pandas as pd

    assert len(pd.read_parquet(first.files[0])) == 4 and len(pd.read_csv(first.files[1])) == 4  # one per customer


@pytest.mark.parametrize("failing", ["to_csv", "insert", "rename"])
def test_a_failed_save_leaves_neither_rows_nor_files(own_ws, monkeypatch, failing) -> None:
    engine = Engine(own_ws)
    result = engine.recommend(customer_ids=some_customers(own_ws, 3))
    calls = {"n": 0}

    def boom(*args, **kwargs):
        raise OSError(f"injected failure in {failing}")

    if failing == "to_csv":
        monkeypatch.setattr("pandas.DataFrame.to_csv", boom)
    elif failing == "insert":
        monkeypatch.setattr(campaigns, "COLUMNS", (*campaigns.COLUMNS[:-1], "no_such_column"))
    else:  # the second rename fails: the first file is already in place and must go again
        real = campaigns.os.replace

        def second_fails(src, dst):
            calls["n"] += 1
            if calls["n"] == 2:
                boom()
            return real(src, dst)

        monkeypatch.setattr(campaigns.os, "replace", second_fails)
    with pytest.raises(Exception):
        campaigns.save(own_ws, result, "doomed")
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendations")[0][0] == 0
    folder = campaigns.stage_dir(own_ws)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_the_cli_recommends_saves_and_lists(own_ws) -> None:
    runner = CliRunner()
    ids = some_customers(own_ws, 2)
    args = ["--home", str(own_ws.home), "recommend", *sum((["--customer", str(i)] for i in ids), []),
            "--top-k", "2", "--save", "autumn", "--json"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert [c["customer_id"] for c in payload["customers"]] == ids
    windows = json.loads((own_ws.feature_repo / "summary.json").read_text())["windows"]
    assert payload["model"] == {"name": "tastyrec-dlrm", "version": 1, "alias": "champion",
                                "label_days": windows["window_days"]}
    assert set(payload["customers"][0]["recommendations"][0]) == {
        "rank", "menu_item_name", "truck_brand_name", "item_category", "sale_price_usd", "score", "reason"}
    engine = Engine(own_ws).recommend(customer_ids=ids, top_k=2).to_dict()
    assert payload["customers"] == engine["customers"]  # the CLI is the engine
    assert payload["campaign"]["name"] == "autumn"
    table = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--customer", str(ids[0])])
    assert table.exit_code == 0 and "recommendations (chance of buying in" in table.output
    listed = runner.invoke(app, ["--home", str(own_ws.home), "campaigns"])
    assert listed.exit_code == 0 and "autumn" in listed.output
    assert json.loads(runner.invoke(app, ["--home", str(own_ws.home), "campaigns", "--json"]).stdout)[0]["customers"] == 2
    unknown = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--customer", "999999999"])
    assert unknown.exit_code == 1 and "none of the customer ids is known" in unknown.output


def test_saving_while_another_process_has_the_warehouse_open_saves_nothing_and_says_so(own_ws) -> None:
    ids = some_customers(own_ws, 2)
    args = ["--home", str(own_ws.home), "recommend", "--customer", str(ids[0]), "--save", "busy"]
    with held_open(own_ws.warehouse, read_only=True) as pid:  # a reader (a notebook): the engine reads, no one writes
        done = CliRunner().invoke(app, args)
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert squeeze(f"error: nothing was saved: {own_ws.warehouse} is in use by another process (PID {pid}, ") \
        in squeeze(done.output)
    assert squeeze("close that program") in squeeze(done.output) and squeeze("save again") in squeeze(done.output)
    result = Engine(own_ws).recommend(customer_ids=ids)
    with held_open(own_ws.warehouse, read_only=False) as pid:  # a writer, once the result is scored
        with pytest.raises(campaigns.WarehouseBusy, match=f"PID {pid}"):
            campaigns.save(own_ws, result, "busy")
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendations")[0][0] == 0
    folder = campaigns.stage_dir(own_ws)
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_campaign_name_is_refused_before_scoring(trained_ws, monkeypatch, name) -> None:
    def no_scoring(*args, **kwargs):
        raise AssertionError("the engine was opened before the name was refused")

    monkeypatch.setattr("tastyrec.recommend.Engine", no_scoring)
    done = CliRunner().invoke(app, ["--home", str(trained_ws.home), "recommend", "--customer", "1", "--save", name])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert "--save needs a campaign name" in done.output


def test_saving_an_empty_result_says_nothing_was_saved_and_why(trained_ws) -> None:
    done = CliRunner().invoke(app, ["--home", str(trained_ws.home), "recommend", "--city", "Atlantis",
                                    "--save", "nobody"])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert "no customer matches the filters" in done.output
    assert squeeze("nothing was saved as campaign 'nobody': the result has no recommendations") \
        in squeeze(done.output)
    assert campaigns.list_campaigns(trained_ws) == []


def no_scoring(*args, **kwargs):
    raise AssertionError("the engine was opened before the name was refused")


# name -> what the refusal says
ODD_NAMES = {
    "101 characters": ("x" * 101, "a campaign name has at most 100 characters; this one has 101"),
    "a megabyte": ("x" * 1_000_000, "a campaign name has at most 100 characters; this one has 1,000,000"),
    "NUL": ("spring\x00menu", "a campaign name cannot hold control characters"),
    "newline": ("spring\nmenu", "a campaign name cannot hold control characters"),
    "escape": ("\x1b[2Jspring", "a campaign name cannot hold control characters"),
    "C1 next line": ("spring\x85menu", "a campaign name cannot hold control characters"),
    "line separator": ("spring\u2028menu", "a campaign name cannot hold control characters"),
}


@pytest.mark.parametrize("name, message", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_odd_campaign_names_are_refused_before_anything_is_written(own_ws, engine, name, message) -> None:
    result = engine.recommend(customer_ids=some_customers(own_ws, 2))
    with pytest.raises(RecommendError, match=message):
        campaigns.save(own_ws, result, name)
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendations")[0][0] == 0
    assert not campaigns.stage_dir(own_ws).exists()


@pytest.mark.parametrize("name, message", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_the_cli_refuses_odd_campaign_names_before_scoring(trained_ws, monkeypatch, name, message) -> None:
    monkeypatch.setattr("tastyrec.recommend.Engine", no_scoring)
    done = CliRunner().invoke(app, ["--home", str(trained_ws.home), "recommend", "--customer", "1", "--save", name])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert squeeze(f"error: --save: {message}") in squeeze(done.output)


def test_a_name_of_100_characters_after_stripping_is_kept(own_ws, engine) -> None:
    name = "y" * 100
    saved = campaigns.save(own_ws, engine.recommend(customer_ids=some_customers(own_ws, 1)), f"  {name}\t ")
    assert saved.name == name and sql(own_ws, "SELECT DISTINCT name FROM ml.recommendations") == [(name,)]


def test_markup_like_and_stored_odd_names_are_printed_literally(own_ws) -> None:
    runner = CliRunner()
    ids = some_customers(own_ws, 1)
    done = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--customer", str(ids[0]), "--save", "[/]"])
    assert done.exit_code == 0, done.output
    assert "saved campaign '[/]' as run" in done.output
    # a name an older version stored unchecked: control characters, markup, a megabyte
    odd = "[bold]odd[/bold]\x1b[31m red\nline\x00nul"
    con = connect(own_ws.warehouse)
    try:
        con.execute("INSERT INTO ml.recommendations SELECT * REPLACE ('old-run' AS run_id, $name AS name) "
                    "FROM ml.recommendations", {"name": odd})
        con.execute("INSERT INTO ml.recommendations SELECT * REPLACE ('huge-run' AS run_id, $name AS name) "
                    "FROM ml.recommendations WHERE run_id = 'old-run'", {"name": "z" * 1_000_000})
    finally:
        con.close()
    listed = runner.invoke(app, ["--home", str(own_ws.home), "campaigns"])
    assert listed.exit_code == 0, listed.output
    assert "[/]" in listed.output
    # escaped, not raw (the name column may cut the middle of a long name short)
    assert squeeze(r"[bold]odd[/bold]\x1b") in squeeze(listed.output)
    assert squeeze(r"red\nline\x00nul") in squeeze(listed.output)
    assert not {"\x1b", "\x00"} & set(listed.output)
    as_json = json.loads(runner.invoke(app, ["--home", str(own_ws.home), "campaigns", "--json"]).stdout)
    assert {c["name"] for c in as_json} == {"[/]", odd, "z" * 1_000_000}


FORMULA = '=HYPERLINK("http://evil","x")'


def test_spreadsheet_safe_quotes_formula_text_and_keeps_numbers() -> None:
    import pandas as pd

    frame = pd.DataFrame({"text": ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", None],
                          "score": [-0.5, 1.0, -2.0, 0.0, 1.5, -1e-9, 2.0, 3.0, float("nan")]})
    safe = campaigns.spreadsheet_safe(frame)
    assert safe["text"].tolist() == ["'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b", None]
    assert safe["score"].equals(frame["score"]) and frame["text"][0] == "=1+2"  # numbers kept, input untouched


def test_a_formula_name_is_neutralised_in_the_stage_csv_only(own_ws, engine) -> None:
    import csv

    import pandas as pd

    result = engine.recommend(customer_ids=some_customers(own_ws, 2), top_k=2)
    first = result.customers[0].recommendations[0]
    first["score"], first["menu_item_name"] = -0.25, "-Tacos"  # a negative number, a text starting with -
    saved = campaigns.save(own_ws, result, FORMULA)
    assert [Path(f).name for f in saved.files] == [f"hyperlink-http-evil-x-{saved.run_id}.{x}"  # the name, slugged
                                                   for x in ("parquet", "csv")]
    with open(saved.files[1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["item_1"] == "'-Tacos" and float(rows[0]["item_1_chance"]) == -0.25  # text quoted, number kept
    assert pd.read_parquet(saved.files[0])["item_1"].iloc[0] == "-Tacos"  # the exact text everywhere else
    assert sql(own_ws, "SELECT DISTINCT name FROM ml.recommendations") == [(FORMULA,)]
    assert [c.name for c in campaigns.list_campaigns(own_ws)] == [FORMULA]
