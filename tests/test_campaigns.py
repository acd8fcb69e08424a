"""Campaigns as a marketing team uses them: the mailing file (stage files, `campaigns export`, the
app's downloads) checked against the warehouse; describe, rename and delete, all or nothing; the
app's Campaigns page under Streamlit's AppTest. Saves go to copies of the trained workspace."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from tastyrec import campaigns
from tastyrec.app import MAIN
from tastyrec.app.backend import literal
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.recommend import Engine, Filters, RecommendError
from tastyrec.warehouse.load import connect

from test_home import mounted
from test_recommend import some_customers, sql
from test_warehouse import squeeze

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def result(trained_ws):
    """Top 3 for a dozen customers with a purchase history (reasons of every kind)."""
    return Engine(trained_ws).recommend(customer_ids=some_customers(trained_ws, 12), top_k=3)


@pytest.fixture
def own_ws(trained_ws, tmp_path) -> Workspace:
    return Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path / "home"))


def tastyrec(ws: Workspace, *args: str, **kwargs):
    return CliRunner().invoke(app, ["--home", str(ws.home), *args], **kwargs)


def contacts_of(ws: Workspace) -> dict[int, tuple]:
    return {row[0]: row[1:] for row in sql(ws, "SELECT customer_id, first_name, e_mail, preferred_language, city, "
                                               "country FROM raw_customer.customer_loyalty")}


def menu_of(ws: Workspace) -> dict[str, tuple]:
    return {name: (brand, float(price)) for name, brand, price in sql(
        ws, "SELECT menu_item_name, truck_brand_name, sale_price_usd FROM raw_pos.menu")}


def check_mailing(ws: Workspace, frame: pd.DataFrame, run_id: str | None = None, result=None) -> None:
    """Every value of a mailing frame against the warehouse (contacts, menu) and the saved rows of
    the treated customers (the control group is not sent), or the result: one row per customer,
    item N of rank N, the expectations' arithmetic."""
    people, menu = contacts_of(ws), menu_of(ws)
    if run_id:
        saved = sql(ws, "SELECT customer_id, rank, menu_item_name, score FROM ml.recommendations WHERE run_id = ? "
                        "AND customer_id NOT IN (SELECT customer_id FROM ml.campaign_groups WHERE run_id = ? "
                        "AND control) ORDER BY 1, 2", [run_id, run_id])
    else:
        saved = [(c.customer_id, r["rank"], r["menu_item_name"], r["score"]) for c in result.customers
                 for r in c.recommendations]
    by_customer: dict[int, list[tuple]] = {}
    for customer_id, rank, item, score in saved:
        by_customer.setdefault(customer_id, []).append((rank, item, score))
    assert frame["customer_id"].tolist() == list(by_customer)
    k = max(len(items) for items in by_customer.values())
    reasons = any(c.startswith("item_1_reason") for c in frame.columns)
    assert frame.columns.tolist() == campaigns.mailing_columns(k, reasons) == [
        "customer_id", "first_name", "e_mail", "preferred_language", "city", "country",
        *[f"item_{n}{s}" for n in range(1, k + 1)
          for s in ("", "_brand", "_price_usd", "_chance", *(["_reason"] if reasons else []))],
        "chance_of_any", "expected_revenue_usd"]
    for row in frame.itertuples(index=False):
        row = row._asdict()
        assert tuple(row[c] for c in campaigns.CONTACT_COLUMNS) == people[row["customer_id"]]
        none, revenue = 1.0, 0.0
        for rank, item, score in by_customer[row["customer_id"]]:
            brand, price = menu[item]
            assert (row[f"item_{rank}"], row[f"item_{rank}_brand"]) == (item, brand)
            assert row[f"item_{rank}_price_usd"] == pytest.approx(price)
            assert row[f"item_{rank}_chance"] == pytest.approx(score, rel=1e-12)
            none *= 1 - score
            revenue += score * price
        assert row["chance_of_any"] == pytest.approx(1 - none, rel=1e-9)
        assert row["expected_revenue_usd"] == pytest.approx(revenue, rel=1e-9)
    totals = campaigns.totals(frame)
    assert totals == pytest.approx({"customers": len(by_customer), "expected_buyers": frame["chance_of_any"].sum(),
                                    "expected_revenue_usd": frame["expected_revenue_usd"].sum()})


# ---- the mailing file --------------------------------------------------------------------------
def test_the_stage_files_are_mailing_files_true_to_the_warehouse(own_ws, result) -> None:
    saved = campaigns.save(own_ws, result, "Hamburg Spring!")
    parquet, csv = map(Path, saved.files)
    assert (parquet.name, csv.name) == (f"hamburg-spring-{saved.run_id}.parquet", f"hamburg-spring-{saved.run_id}.csv")
    frame = pd.read_parquet(parquet)
    check_mailing(own_ws, frame, saved.run_id)
    assert saved.totals == pytest.approx(campaigns.totals(frame))
    # the reasons are the entries' (where the engine gives them; a result without them has no such column)
    given = {(c.customer_id, r["rank"]): r.get("reason") for c in result.customers for r in c.recommendations}
    if any(given.values()):
        for row in frame.itertuples(index=False):
            for rank in range(1, 4):
                assert getattr(row, f"item_{rank}_reason") == given[(row.customer_id, rank)]
    else:
        assert "item_1_reason" not in frame.columns
    pd.testing.assert_frame_equal(pd.read_csv(csv), frame, check_dtype=False)  # nothing here looks like a formula
    # the table keeps the campaign's record: one row per customer and rank
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendations WHERE run_id = ?", [saved.run_id]) == [
        (sum(len(c.recommendations) for c in result.customers),)]


def test_slugs_make_safe_file_names() -> None:
    assert campaigns.slug("Hamburg Spring!") == "hamburg-spring"
    assert campaigns.slug("  Crème brûlée / été  ") == "creme-brulee-ete"
    assert campaigns.slug('=HYPERLINK("http://evil","x")') == "hyperlink-http-evil-x"
    assert campaigns.slug("../../etc/passwd") == "etc-passwd"
    assert campaigns.slug("東京") == "campaign" and len(campaigns.slug("x" * 100)) == campaigns.SLUG_MAX
    assert campaigns.mailing_file_name("Hamburg Spring", "20261203-101500-ab12cd34", "csv") == \
        "hamburg-spring-20261203-101500-ab12cd34.csv"


def test_the_mailing_frame_of_a_result_for_the_apps_download(trained_ws, result) -> None:
    frame = campaigns.mailing_frame(trained_ws, result.customers)
    check_mailing(trained_ws, frame, result=result)
    as_dicts = campaigns.mailing_frame(trained_ws, result.to_dict()["customers"])  # the service's shape
    pd.testing.assert_frame_equal(as_dicts, frame)
    # entries without a reason (an older service): no reason columns, nothing else changes
    plain = [{**c, "recommendations": [{k: v for k, v in r.items() if k != "reason"} for r in c["recommendations"]]}
             for c in result.to_dict()["customers"]]
    without = campaigns.mailing_frame(trained_ws, plain)
    assert not [c for c in without.columns if c.endswith("_reason")]
    pd.testing.assert_frame_equal(without, frame[without.columns])
    wider = campaigns.mailing_frame(trained_ws, result.customers, top_k=5)  # ranks nobody has: empty columns
    assert wider["item_5"].isna().all() and wider["chance_of_any"].tolist() == frame["chance_of_any"].tolist()


def test_chances_outside_0_1_are_clipped_in_the_expectations_only() -> None:
    items = pd.DataFrame({"customer_id": [1, 1, 2], "rank": [1, 2, 1], "menu_item_name": ["a", "b", "c"],
                          "truck_brand_name": ["A", "B", None], "sale_price_usd": [10.0, None, 4.0],
                          "score": [0.5, 0.2, -0.5], "reason": [None, None, None]})
    frame = campaigns.mailing(items, pd.DataFrame({"customer_id": [1], "city": ["Hamburg"]}))
    assert frame.columns.tolist() == ["customer_id", "city", "item_1", "item_1_brand", "item_1_price_usd",
                                      "item_1_chance", "item_2", "item_2_brand", "item_2_price_usd", "item_2_chance",
                                      "chance_of_any", "expected_revenue_usd"]
    one, two = frame.to_dict("records")
    assert one["chance_of_any"] == pytest.approx(1 - 0.5 * 0.8) and one["expected_revenue_usd"] == 5.0  # no price: 0
    assert two["item_1_chance"] == -0.5 and two["chance_of_any"] == 0.0 and two["expected_revenue_usd"] == 0.0
    assert pd.isna(two["city"]) and pd.isna(two["item_2"])
    assert campaigns.totals(frame) == pytest.approx({"customers": 2, "expected_buyers": 0.6,
                                                     "expected_revenue_usd": 5.0})


def test_campaigns_export_writes_the_mailing_file_by_name_or_run_id(own_ws, result, tmp_path, monkeypatch) -> None:
    saved = campaigns.save(own_ws, result, "Tokyo autumn")
    tmp_path = tmp_path / "cwd"  # the current folder, beside the home
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    done = tastyrec(own_ws, "campaigns", "export", "Tokyo autumn")
    assert done.exit_code == 0, done.output
    path = tmp_path / f"tokyo-autumn-{saved.run_id}.csv"
    assert squeeze(f"exported campaign 'Tokyo autumn' (run {saved.run_id}) to {path}") in squeeze(done.stdout)
    exported = pd.read_csv(path)
    check_mailing(own_ws, exported, saved.run_id)
    assert path.read_bytes() == Path(saved.files[1]).read_bytes()  # the stage file, made again from the table
    totals = campaigns.totals(exported)
    assert squeeze(f"{totals['customers']} customers; expected buyers {totals['expected_buyers']:,.1f}, expected "
                   f"revenue ${totals['expected_revenue_usd']:,.2f}") in squeeze(done.stdout)
    # parquet, by run id, into a folder; and to a file named by the caller
    (tmp_path / "out").mkdir()
    done = tastyrec(own_ws, "campaigns", "export", saved.run_id, "--format", "parquet", "--output", "out", "--json")
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["path"] == f"out/tokyo-autumn-{saved.run_id}.parquet"
    assert payload["campaign"]["totals"] == pytest.approx(totals)
    pd.testing.assert_frame_equal(pd.read_parquet(payload["path"]), exported, check_dtype=False)
    assert tastyrec(own_ws, "campaigns", "export", saved.run_id, "--output", "mine.csv").exit_code == 0
    assert (tmp_path / "mine.csv").read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "out").glob(".*"))


def test_a_name_shared_by_several_campaigns_is_refused_with_their_run_ids(own_ws, result, tmp_path,
                                                                          monkeypatch) -> None:
    first = campaigns.save(own_ws, result, "spring")
    second = campaigns.save(own_ws, result, "spring")
    tmp_path = tmp_path / "cwd"  # the current folder, beside the home
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in campaigns.stage_dir(own_ws).iterdir())
    listed = ", ".join(c.run_id for c in campaigns.list_campaigns(own_ws))  # newest first
    assert listed in (f"{second.run_id}, {first.run_id}", f"{first.run_id}, {second.run_id}")  # (the same second)
    for args in (["export", "spring"], ["describe", "spring", "text"], ["rename", "spring", "summer"],
                 ["delete", "spring", "--yes"]):
        done = tastyrec(own_ws, "campaigns", *args)
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
        assert squeeze(f"error: 2 campaigns are named 'spring' (run ids {listed}): give the "
                       "run id of the one you mean") in squeeze(done.output)
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in campaigns.stage_dir(own_ws).iterdir()) == before
    assert sql(own_ws, "SELECT DISTINCT name FROM ml.recommendations") == [("spring",)]
    unknown = tastyrec(own_ws, "campaigns", "export", "autumn")
    assert unknown.exit_code == 1 and "no saved campaign is named 'autumn'" in unknown.output
    # by run id, one of them is meant
    assert tastyrec(own_ws, "campaigns", "rename", first.run_id, "spring, first").exit_code == 0
    assert campaigns.find_campaign(own_ws, "spring").run_id == second.run_id


def test_a_reopened_campaign_carries_price_brand_city_and_country(own_ws, result) -> None:
    saved = campaigns.save(own_ws, result, "reopened")
    rows = campaigns.load_campaign(own_ws, saved.run_id)
    people, menu = contacts_of(own_ws), menu_of(own_ws)
    assert len(rows) == saved.rows and set(rows["name"]) == {"reopened"}
    for row in rows.itertuples(index=False):
        assert (row.truck_brand_name, row.sale_price_usd) == pytest.approx(menu[row.menu_item_name])
        assert (row.city, row.country) == people[row.customer_id][3:]
    with pytest.raises(RecommendError, match="no saved campaign with run id 'nope'"):
        campaigns.load_campaign(own_ws, "nope")


# ---- describe, rename, delete ------------------------------------------------------------------
def state(ws: Workspace) -> tuple:
    """What a change may touch: the rows, the side tables and the stage files (names and bytes)."""
    con = connect(ws.warehouse, read_only=True)
    try:
        tables = campaigns._side_tables(con)
        rows = con.execute("SELECT * EXCLUDE (filters) FROM ml.recommendations ORDER BY ALL").fetchall()
        side = {t: con.execute(f"SELECT * FROM ml.{t} ORDER BY ALL").fetchall() for t in sorted(tables)}
    finally:
        con.close()
    folder = campaigns.stage_dir(ws)
    return rows, side, {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_describe_rename_and_delete_from_the_cli(own_ws, result) -> None:
    kept = campaigns.save(own_ws, result, "kept")
    saved = campaigns.save(own_ws, result, "Spring menu")
    done = tastyrec(own_ws, "campaigns", "describe", "Spring menu", "Lunch offers for\nregulars")
    assert done.exit_code == 0, done.output
    listed = {c["run_id"]: c for c in json.loads(tastyrec(own_ws, "campaigns", "--json").stdout)}
    assert listed[saved.run_id]["description"] == "Lunch offers for\nregulars" and listed[kept.run_id]["description"] is None
    shown = tastyrec(own_ws, "campaigns")
    assert shown.exit_code == 0 and "for\\nregulars" in shown.stdout  # escaped: one line per campaign

    files = {Path(f).suffix: Path(f).read_bytes() for f in saved.files}
    done = tastyrec(own_ws, "campaigns", "rename", "Spring menu", "Summer menu")
    assert done.exit_code == 0, done.output
    assert sql(own_ws, "SELECT DISTINCT name FROM ml.recommendations WHERE run_id = ?", [saved.run_id]) == [
        ("Summer menu",)]
    [renamed] = [c for c in campaigns.list_campaigns(own_ws) if c.run_id == saved.run_id]
    assert [Path(f).name for f in renamed.files] == [f"summer-menu-{saved.run_id}.{x}" for x in ("parquet", "csv")]
    assert {Path(f).suffix: Path(f).read_bytes() for f in renamed.files} == files
    assert not any(Path(f).exists() for f in saved.files) and renamed.description == "Lunch offers for\nregulars"

    declined = tastyrec(own_ws, "campaigns", "delete", "Summer menu", input="n\n")
    assert declined.exit_code == 1 and "nothing was deleted" in declined.output
    assert all(Path(f).exists() for f in renamed.files)
    done = tastyrec(own_ws, "campaigns", "delete", "Summer menu", "--yes")
    assert done.exit_code == 0, done.output
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendations WHERE run_id = ?", [saved.run_id]) == [(0,)]
    assert sql(own_ws, "SELECT count(*) FROM ml.recommendation_reasons WHERE run_id = ?", [saved.run_id]) == [(0,)]
    assert sql(own_ws, "SELECT count(*) FROM ml.campaigns WHERE run_id = ?", [saved.run_id]) == [(0,)]
    assert sorted(p.name for p in campaigns.stage_dir(own_ws).iterdir()) == sorted(Path(f).name for f in kept.files)
    assert [c.run_id for c in campaigns.list_campaigns(own_ws)] == [kept.run_id]


def test_odd_descriptions_and_names_are_refused(own_ws, result) -> None:
    saved = campaigns.save(own_ws, result, "odd")
    before = state(own_ws)
    with pytest.raises(RecommendError, match="control characters"):
        campaigns.describe_campaign(own_ws, saved.run_id, "ring \x07 the bell")
    with pytest.raises(RecommendError, match="at most 2,000 characters"):
        campaigns.describe_campaign(own_ws, saved.run_id, "x" * 2001)
    with pytest.raises(RecommendError, match="a campaign name cannot hold control characters"):
        campaigns.rename_campaign(own_ws, saved.run_id, "new\nname")
    done = tastyrec(own_ws, "campaigns", "rename", "odd", "   ")
    assert done.exit_code == 1 and "a campaign needs a name" in done.output
    assert state(own_ws) == before
    assert campaigns.describe_campaign(own_ws, "odd", "  ").description is None  # blank clears


class FailingCommit:
    """A DuckDB connection whose commit fails (the disk filling up at the last moment)."""

    def __init__(self, con):
        self.con = con

    def __getattr__(self, name):
        return getattr(self.con, name)

    def commit(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "warehouse.duckdb.wal")


@pytest.mark.parametrize("change", ["rename", "delete"])
@pytest.mark.parametrize("failure", ["second move", "commit"])
def test_rename_and_delete_leave_rows_and_files_as_they_were_on_a_failure(own_ws, result, monkeypatch, change,
                                                                         failure) -> None:
    other = campaigns.save(own_ws, result, "other")
    saved = campaigns.save(own_ws, result, "Spring menu")
    campaigns.describe_campaign(own_ws, saved.run_id, "the one to change")
    before = state(own_ws)
    if failure == "second move":  # the first file has moved already: it must come back
        real, calls = os.replace, []

        def second_fails(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
            return real(src, dst)

        monkeypatch.setattr(campaigns.os, "replace", second_fails)
    else:
        writer = campaigns._writer
        monkeypatch.setattr(campaigns, "_writer", lambda *args: FailingCommit(writer(*args)))
    with pytest.raises(campaigns.NotSaved, match="nothing was changed"):
        if change == "rename":
            campaigns.rename_campaign(own_ws, "Spring menu", "Summer menu")
        else:
            campaigns.delete_campaign(own_ws, "Spring menu")
    monkeypatch.undo()
    assert state(own_ws) == before
    assert {c.run_id for c in campaigns.list_campaigns(own_ws)} == {other.run_id, saved.run_id}


def test_a_read_only_stage_folder_changes_nothing(own_ws, result) -> None:
    saved = campaigns.save(own_ws, result, "Spring menu")
    before = state(own_ws)
    folder = campaigns.stage_dir(own_ws)
    with mounted(folder, ["--bind", str(folder)], ["-o", "remount,bind,ro"]):
        for args in (["rename", "Spring menu", "Summer menu"], ["delete", "Spring menu", "--yes"]):
            done = tastyrec(own_ws, "campaigns", *args)
            assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
            assert squeeze(f"error: cannot write to {own_ws.home}: read-only file system; campaign 'Spring menu' "
                           "was not") in squeeze(done.output)
    assert state(own_ws) == before and campaigns.find_campaign(own_ws, saved.run_id).name == "Spring menu"


# ---- the app's Campaigns page --------------------------------------------------------------------
def page(ws: Workspace, monkeypatch) -> AppTest:
    monkeypatch.setenv("TASTYREC_HOME", str(ws.home))
    at = AppTest.from_file(str(MAIN.with_name("pages") / "campaigns.py"), default_timeout=TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def display(element) -> pd.DataFrame:
    """A dataframe element as the browser shows it (the Styler's display values)."""
    from streamlit import dataframe_util

    return dataframe_util.convert_arrow_bytes_to_pandas_df(element.proto.arrow_data.styler.display_values)


def test_the_campaigns_page_shows_items_in_columns_totals_and_the_mailing_file(own_ws, result, monkeypatch) -> None:
    from test_app import downloads

    saved = campaigns.save(own_ws, result, "Hamburg Spring")
    # a customer with one item that is no longer on the menu: missing values show as "–"
    con = connect(own_ws.warehouse)
    try:
        con.execute("INSERT INTO ml.recommendations SELECT * REPLACE (999999 AS customer_id, 'Gone Dish' AS "
                    "menu_item_name) FROM ml.recommendations WHERE run_id = ? AND rank = 1 LIMIT 1", [saved.run_id])
    finally:
        con.close()
    files = downloads(monkeypatch)
    at = page(own_ws, monkeypatch)
    listing = at.dataframe[0].value.set_index("run id")
    assert listing.loc[saved.run_id, "name"] == "Hamburg Spring" and listing.loc[saved.run_id, "description"] == "–"
    at.selectbox(key="campaign_run").select(saved.run_id).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])

    table = at.dataframe[1].value  # every customer with their group; the mailing file: the treated only
    expected = campaigns.campaign_mailing(own_ws, saved.run_id)
    assert table.columns.tolist() == ["customer_id", "group", *[c for c in expected.columns[1:] if c not in (
        "first_name", "e_mail", "preferred_language")]]
    control = {c for (c,) in sql(own_ws, "SELECT customer_id FROM ml.campaign_groups WHERE run_id = ? AND control",
                                 [saved.run_id])}
    assert len(control) == 1 and set(table.loc[table["group"] == "control", "customer_id"]) == control  # 10% of 12
    sent = table[table["group"] == "treated"].drop(columns="group").reset_index(drop=True)
    pd.testing.assert_frame_equal(sent, expected[sent.columns], check_dtype=False)
    assert not control & set(expected["customer_id"])
    people, menu = contacts_of(own_ws), menu_of(own_ws)
    for row in table[table["customer_id"] != 999999].itertuples(index=False):
        assert (row.city, row.country) == people[row.customer_id][3:]
        assert (row.item_1_brand, row.item_1_price_usd) == pytest.approx(menu[row.item_1])
    shown = display(at.dataframe[1]).set_index(table["customer_id"])
    assert shown.loc[999999, ["item_1_brand", "item_1_price_usd", "item_2", "item_2_chance", "city"]].tolist() == \
        ["–"] * 5
    first = table.iloc[0]
    assert shown.iloc[0]["item_1_price_usd"] == f"${first['item_1_price_usd']:,.2f}"
    assert shown.iloc[0]["item_1_chance"] == f"{first['item_1_chance']:.1%}"

    totals = campaigns.totals(expected)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Treated (sent)": f"{totals['customers']:,}", "Control (not sent)": "1",
                       "Expected buyers": f"{totals['expected_buyers']:,.0f}",
                       "Expected revenue": f"${totals['expected_revenue_usd']:,.0f}"}
    # no order after the lists' day yet: the report says so
    assert [i.value for i in at.info if i.value.startswith("not enough data yet: orders run to ")]
    assert any(f"item_{n}_chance" in table for n in (1, 2, 3))
    # the download: the mailing file, named for the campaign, with the warehouse's contacts
    [button] = at.get("download_button")
    name = f"hamburg-spring-{saved.run_id}.csv"
    assert files[name] == campaigns.spreadsheet_safe(expected).to_csv(index=False).encode()
    mailing = pd.read_csv(io.BytesIO(files[name]))
    for row in mailing[mailing["customer_id"] != 999999].itertuples(index=False):
        assert (row.first_name, row.e_mail, row.preferred_language) == people[row.customer_id][:3]
    assert button.label.startswith("Download the mailing file")


def test_the_campaigns_page_describes_renames_and_deletes(own_ws, result, monkeypatch) -> None:
    kept = campaigns.save(own_ws, result, "kept")
    saved = campaigns.save(own_ws, result, "Spring *menu*")
    at = page(own_ws, monkeypatch)
    at.selectbox(key="campaign_run").select(saved.run_id).run()
    at.text_area(key=f"campaign_description_{saved.run_id}").input("For regulars [link](http://x)").run()
    at.button(key="campaign_describe").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert [s.value for s in at.success] == [r"Saved the description of Spring \*menu\*."]
    assert campaigns.find_campaign(own_ws, saved.run_id).description == "For regulars [link](http://x)"
    assert literal("For regulars [link](http://x)") in [m.value for m in at.markdown]  # shown as typed

    at.text_input(key=f"campaign_new_name_{saved.run_id}").input("Summer menu").run()
    at.button(key="campaign_rename").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert [s.value for s in at.success] == [r"Renamed Spring \*menu\* to Summer menu (its files too)."]
    renamed = campaigns.find_campaign(own_ws, saved.run_id)
    assert renamed.name == "Summer menu" and [Path(f).name for f in renamed.files] == [
        f"summer-menu-{saved.run_id}.{x}" for x in ("parquet", "csv")]
    assert at.selectbox(key="campaign_run").value == saved.run_id  # still open, under its new name
    assert at.dataframe[0].value.set_index("run id").loc[saved.run_id, "name"] == "Summer menu"

    assert at.button(key="campaign_delete").disabled  # the confirmation first
    at.checkbox(key=f"campaign_delete_sure_{saved.run_id}").check().run()
    at.button(key="campaign_delete").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert [s.value for s in at.success] == [f"Deleted Summer menu (run {saved.run_id}) and its files."]
    assert at.selectbox(key="campaign_run").value is None
    assert at.dataframe[0].value["run id"].tolist() == [kept.run_id]
    assert not any(Path(f).exists() for f in renamed.files) and all(Path(f).exists() for f in kept.files)


def test_the_campaigns_page_reports_failures_and_changes_nothing(own_ws, result, monkeypatch, caplog) -> None:
    saved = campaigns.save(own_ws, result, "Spring menu")
    before = state(own_ws)
    at = page(own_ws, monkeypatch)
    at.selectbox(key="campaign_run").select(saved.run_id).run()
    at.text_input(key=f"campaign_new_name_{saved.run_id}").input("  ").run()
    at.button(key="campaign_rename").click().run()
    assert [e.value for e in at.error] == ["a campaign needs a name"] and not at.success

    def boom(*args, **kwargs):
        raise RuntimeError("/secret/path: injected")

    monkeypatch.setattr(campaigns.os, "replace", boom)
    at.text_input(key=f"campaign_new_name_{saved.run_id}").input("Summer menu").run()
    at.button(key="campaign_rename").click().run()
    assert [e.value for e in at.error] == ["could not rename the campaign: something went wrong (RuntimeError); "
                                           "the details are in the log of `tastyrec app`"]
    at.checkbox(key=f"campaign_delete_sure_{saved.run_id}").check().run()
    at.button(key="campaign_delete").click().run()
    assert [e.value for e in at.error] == ["could not delete the campaign: something went wrong (RuntimeError); "
                                           "the details are in the log of `tastyrec app`"]
    assert not at.exception and not at.success and "/secret/path" in caplog.text
    monkeypatch.undo()
    assert state(own_ws) == before
    assert at.selectbox(key="campaign_run").value == saved.run_id


def test_a_campaign_records_its_filters_as_the_data_spells_them(own_ws) -> None:
    """`--city tokyo --save` selects Tokyo's customers and records "Tokyo", not what was typed."""
    done = tastyrec(own_ws, "recommend", "--city", "tOKYO", "--save", "typed in lower case", "--json")
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["filters"]["city"] == ["Tokyo"]
    stored = sql(own_ws, "SELECT DISTINCT filters::VARCHAR FROM ml.recommendations WHERE run_id = ?",
                 [payload["campaign"]["run_id"]])
    assert [json.loads(f)["city"] for (f,) in stored] == [["Tokyo"]]
