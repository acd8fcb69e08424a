"""The recommendation engine, campaigns and the `recommend` / `campaigns` commands, checked
against independent SQL on the warehouse."""

from __future__ import annotations

import json
import shutil
from datetime import date

import pytest
from typer.testing import CliRunner

from tastyrec import campaigns
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.recommend import Engine, Filters, RecommendError
from tastyrec.warehouse.load import connect


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


def test_the_engine_scores_like_the_registered_predictor(engine, trained_ws) -> None:
    from tastyrec.registry import load_predictor

    ids = some_customers(trained_ws, 3)
    rows = engine.online.for_customers(ids)
    predictor, _ = load_predictor(trained_ws)
    assert (engine.score(rows) == predictor.predict(rows)).all()
    top = engine.recommend(customer_ids=ids[:1], top_k=1).customers[0].recommendations[0]
    mine = rows[rows["customer_id"] == ids[0]].assign(score=predictor.predict(rows[rows["customer_id"] == ids[0]]))
    assert top["score"] == pytest.approx(mine["score"].max())


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

    assert len(pd.read_parquet(first.files[0])) == 8 and len(pd.read_csv(first.files[1])) == 8


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
    assert payload["model"] == {"name": "tastyrec-dlrm", "version": 1, "alias": "champion"}
    assert set(payload["customers"][0]["recommendations"][0]) == {
        "rank", "menu_item_name", "truck_brand_name", "item_category", "sale_price_usd", "score"}
    engine = Engine(own_ws).recommend(customer_ids=ids, top_k=2).to_dict()
    assert payload["customers"] == engine["customers"]  # the CLI is the engine
    assert payload["campaign"]["name"] == "autumn"
    table = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--customer", str(ids[0])])
    assert table.exit_code == 0 and "recommendations (score)" in table.output
    listed = runner.invoke(app, ["--home", str(own_ws.home), "campaigns"])
    assert listed.exit_code == 0 and "autumn" in listed.output
    assert json.loads(runner.invoke(app, ["--home", str(own_ws.home), "campaigns", "--json"]).stdout)[0]["customers"] == 2
    unknown = runner.invoke(app, ["--home", str(own_ws.home), "recommend", "--customer", "999999999"])
    assert unknown.exit_code == 1 and "none of the customer ids is known" in unknown.output
