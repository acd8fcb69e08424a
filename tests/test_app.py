"""The Streamlit app: its flow under Streamlit's AppTest (in-process engine, and the REST service
as backend), and the same flow in a real Chromium driven by Playwright against `tastyrec app`."""

from __future__ import annotations

import copy
import csv
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import free_port
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from tastyrec.app import MAIN, command
from tastyrec.app.backend import SERVICE_ENV, LocalEngine, literal
from tastyrec.config import Workspace
from tastyrec.warehouse.load import connect

from test_warehouse import held_open

QUOTED_CITY = "O'Brien"  # a few Tokyo customers are moved here: values with quotes must just work
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Where the browser test saves its screenshot: a temporary folder, unless this names a file
# (`make screenshot` refreshes the README's docs/app.png so; a plain test run leaves git clean)
SCREENSHOT_ENV = "TASTYREC_SCREENSHOT"
TIMEOUT_S = 120  # a script run that opens the model on a busy CI machine


@pytest.fixture(scope="module")
def app_ws(trained_ws, tmp_path_factory) -> Workspace:
    """A copy of the trained workspace (the app saves campaigns into it) in which the first three
    Tokyo customers live in a city with a quote in its name."""
    ws = Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path_factory.mktemp("app") / "home"))
    con = connect(ws.warehouse)
    try:
        con.execute("UPDATE raw_customer.customer_loyalty SET city = $quoted WHERE customer_id IN "
                    "(SELECT customer_id FROM raw_customer.customer_loyalty WHERE city = 'Tokyo' "
                    "ORDER BY customer_id LIMIT 3)", {"quoted": QUOTED_CITY})
    finally:
        con.close()
    return ws


def sql(ws: Workspace, query: str, *params) -> list[tuple]:
    con = connect(ws.warehouse, read_only=True)
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


def app_test(ws: Workspace, monkeypatch, service: str | None = None) -> AppTest:
    monkeypatch.setenv("TASTYREC_HOME", str(ws.home))
    if service:
        monkeypatch.setenv(SERVICE_ENV, service)
    else:
        monkeypatch.delenv(SERVICE_ENV, raising=False)
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def get_recommendations(at: AppTest, country=(), city=(), brand=(), not_visited=False, not_ordered=False,
                        top_k: int | None = None) -> AppTest:
    """Fill the filters as a user would (each change reruns the script), then click the button."""
    for key, values in (("country", country), ("city", city), ("brand", brand)):
        for value in values:
            at.multiselect(key=key).select(value).run()
    at.checkbox(key="trucks_not_visited").set_value(not_visited)
    at.checkbox(key="items_not_ordered").set_value(not_ordered)
    if top_k is not None:
        at.number_input(key="top_k").set_value(top_k)
    at.button(key="get_recommendations").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def save(at: AppTest, name: str, holdout: int | None = None) -> str:
    """Save the result as a campaign (`holdout`: the control group's percentage, default the
    page's); the run id from the confirmation."""
    at.text_input(key="campaign_name").input(name)
    if holdout is not None:
        at.number_input(key="holdout").set_value(holdout)
    at.button(key="save").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    confirmation = next(s.value for s in at.success if s.value.startswith("Saved campaign"))
    return re.search(r"as run (\S+) \(", confirmation).group(1)


def result_of(at: AppTest) -> dict:
    return at.session_state["shown"].result


def test_flow_country_city_flags_save(app_ws, monkeypatch):
    at = app_test(app_ws, monkeypatch)
    at.multiselect(key="country").select("Japan").run()
    japanese = {c for (c,) in sql(app_ws, "SELECT DISTINCT city FROM raw_customer.customer_loyalty "
                                          "WHERE country = ?", "Japan")}
    assert set(at.multiselect(key="city").options) == japanese  # narrowed to the chosen country
    get_recommendations(at, city=["Tokyo"], not_visited=True, not_ordered=True)

    result = result_of(at)
    tokyo = [cid for (cid,) in sql(app_ws, "SELECT customer_id FROM raw_customer.customer_loyalty "
                                           "WHERE city = 'Tokyo' ORDER BY customer_id")]
    shown = [c["customer_id"] for c in result["customers"]]
    assert shown and set(shown) <= set(tokyo)
    assert result["filters"] == {"country": ["Japan"], "city": ["Tokyo"], "brand": [], "trucks_not_visited": True,
                                 "items_not_ordered": True}
    for c in result["customers"]:  # the flags hold: nothing bought before, no brand visited before
        bought = {h["menu_item_name"] for h in c["history"]}
        visited = {b for (b,) in sql(app_ws, "SELECT DISTINCT truck_brand_name FROM analytics.orders_v "
                                             "WHERE customer_id = ?", c["customer_id"])}
        assert len(c["recommendations"]) <= 3 and not bought & {r["menu_item_name"] for r in c["recommendations"]}
        assert not visited & {r["truck_brand_name"] for r in c["recommendations"]}
    assert any(r["truck_brand_name"] for c in result["customers"] for r in c["recommendations"])
    # every Tokyo customer is counted: with recommendations, or listed with the reason
    without = result["without_recommendations"]
    assert sorted(shown + [w["customer_id"] for w in without]) == tokyo and result["selected"] == len(tokyo)
    # the counts add up, in words: before the click, and after it by reason
    assert f"{len(tokyo)} customers match these filters" in [c.value for c in at.caption]
    counted = ([i.value for i in at.info if i.value.startswith(f"{len(tokyo)} match; {len(shown)} get a list; ")]
               if without else [s.value for s in at.success if s.value == f"{len(tokyo)} match; all {len(shown)} get a list"])
    assert len(counted) == 1, [*at.info, *at.success]
    table = at.dataframe[0].value
    assert table["customer_id"].tolist() == shown and set(table["city"]) == {"Tokyo"}
    first = result["customers"][0]["recommendations"][0]
    assert table[["item 1", "chance 1", "why 1"]].iloc[0].tolist() == [
        f"{first['menu_item_name']} ({first['truck_brand_name']} · ${first['sale_price_usd']:.2f})", first["score"],
        first["reason"]]
    # the campaign's expectations: Σ 1 − Π(1 − chance), Σ chance × price
    buyers = sum(1 - np.prod([1 - r["score"] for r in c["recommendations"]]) for c in result["customers"])
    revenue = sum(r["score"] * r["sale_price_usd"] for c in result["customers"] for r in c["recommendations"])
    metrics, days = {m.label: m.value for m in at.metric}, result["model"]["label_days"]
    assert metrics[f"Expected buyers in the next {days} days"] == f"{buyers:,.0f} of {len(shown):,}"
    assert metrics[f"Expected revenue in the next {days} days"] == f"${revenue:,.0f}"
    assert not [i for i in at.info if "Menu items not ordered" in i.value]  # cross-sell already

    run_id = save(at, "Tokyo spring upsell")
    rows = sql(app_ws, "SELECT customer_id, rank, menu_item_name, name, filters::VARCHAR FROM ml.recommendations "
                       "WHERE run_id = ? ORDER BY customer_id, rank", run_id)
    assert len(rows) == sum(len(c["recommendations"]) for c in result["customers"])
    assert {r[3] for r in rows} == {"Tokyo spring upsell"} and json.loads(rows[0][4]) == result["filters"]
    assert (app_ws.stage / "recommendations" / f"tokyo-spring-upsell-{run_id}.csv").exists()  # named for the campaign


def test_quoted_values_in_filters_and_names(app_ws, monkeypatch):
    at = app_test(app_ws, monkeypatch)
    assert QUOTED_CITY in at.multiselect(key="city").options
    get_recommendations(at, city=[QUOTED_CITY])
    result = result_of(at)
    assert len(result["customers"]) == 3 and {c["city"] for c in result["customers"]} == {QUOTED_CITY}
    run_id = save(at, 'O\'Brien "quoted" campaign')
    assert sql(app_ws, "SELECT DISTINCT name FROM ml.recommendations WHERE run_id = ?", run_id) == [
        ('O\'Brien "quoted" campaign',)]


def test_empty_result_shows_the_engines_message(app_ws, monkeypatch):
    # a city and a brand that has no truck there: its customers have no candidate item
    city, brand = sql(app_ws, """
        SELECT c.city, b.truck_brand_name
        FROM (SELECT DISTINCT city FROM raw_customer.customer_loyalty) c,
             (SELECT DISTINCT truck_brand_name FROM raw_pos.menu) b
        WHERE NOT EXISTS (SELECT 1 FROM raw_pos.truck t JOIN raw_pos.menu m USING (menu_type_id)
                          WHERE t.primary_city = c.city AND m.truck_brand_name = b.truck_brand_name)
        ORDER BY 1, 2 LIMIT 1""")[0]
    at = get_recommendations(app_test(app_ws, monkeypatch), city=[city], brand=[brand])
    result = result_of(at)
    assert result["customers"] == [] and result["message"]
    assert [i.value for i in at.info] == [result["message"]]
    assert "no truck of the chosen brands" in result["message"]
    listed = at.dataframe[0].value  # each customer of the city, with the reason
    assert sorted(listed["customer_id"]) == [cid for (cid,) in sql(
        app_ws, "SELECT customer_id FROM raw_customer.customer_loyalty WHERE city = ? ORDER BY 1", city)]
    assert set(listed["reason"]) == {f"no truck of the chosen brands serves {city}"} and len(at.dataframe) == 1


def test_top_k_drilldown_csv_and_charts(app_ws, monkeypatch):
    at = get_recommendations(app_test(app_ws, monkeypatch), country=["Japan"], top_k=5)
    result = result_of(at)
    assert result["top_k"] == 5 and all(len(c["recommendations"]) == 5 for c in result["customers"])
    # the download is the mailing file: one row per customer, contacts from the warehouse, five items
    csv = pd.read_csv(io.BytesIO(at.session_state["shown"].csv))
    assert csv["customer_id"].tolist() == [c["customer_id"] for c in result["customers"]]
    contacts = pd.DataFrame(sql(app_ws, "SELECT customer_id, first_name, e_mail, preferred_language "
                                        "FROM raw_customer.customer_loyalty WHERE country = 'Japan'"),
                            columns=["customer_id", "first_name", "e_mail", "preferred_language"])
    expected = csv[["customer_id"]].merge(contacts, on="customer_id", how="left")
    assert csv[["first_name", "e_mail", "preferred_language"]].equals(expected.drop(columns="customer_id"))
    assert csv["item_5"].tolist() == [c["recommendations"][4]["menu_item_name"] for c in result["customers"]]
    assert csv["item_5_reason"].tolist() == [c["recommendations"][4]["reason"] for c in result["customers"]]
    assert at.get("download_button")[0].label == "Download CSV"
    # the table first: the charts and the drill-down run only when their tab is opened
    assert len(at.dataframe) == 1 and not at.get("vega_lite_chart") and "_counts" not in vars(at.session_state["shown"])
    at.session_state["result_tab"] = "Charts"
    at.run()
    assert len(at.get("vega_lite_chart")) == 2 and not at.dataframe  # items and brands: recommended vs bought

    second = result["customers"][1]
    at.session_state["result_tab"] = "One customer"
    at.run()
    at.selectbox(key="detail_customer").select(second["customer_id"]).run()
    history, recs = at.dataframe[0].value, at.dataframe[1].value
    assert history["menu_item_name"].tolist() == [h["menu_item_name"] for h in second["history"]]
    assert recs["score"].tolist() == [r["score"] for r in second["recommendations"]]


def test_reopen_a_saved_campaign(app_ws, monkeypatch):
    at = get_recommendations(app_test(app_ws, monkeypatch), city=["Tokyo"])
    result = result_of(at)
    bought = [r["menu_item_name"] in {h["menu_item_name"] for h in c["history"]}
              for c in result["customers"] for r in c["recommendations"]]
    assert np.mean(bought) > 0.5  # mostly items they buy: the page says so and points to cross-sell
    assert len([i for i in at.info if "Menu items not ordered" in i.value]) == 1
    run_id = save(at, "to reopen")
    saved = result_of(at)
    at.switch_page("pages/campaigns.py").run()
    listing = at.dataframe[0].value
    assert run_id in listing["run id"].tolist()
    assert listing.set_index("run id").loc[run_id, "name"] == "to reopen"
    at.selectbox(key="campaign_run").select(run_id).run()
    assert not at.exception
    rows = at.dataframe[1].value  # one row per customer, each item in columns of its own
    assert rows["customer_id"].tolist() == [c["customer_id"] for c in saved["customers"]]
    for c, row in zip(saved["customers"], rows.to_dict("records")):
        assert (row["city"], row["country"]) == (c["city"], c["country"])
        for r in c["recommendations"]:
            item = f"item_{r['rank']}"
            assert (row[item], row[f"{item}_brand"]) == (r["menu_item_name"], r["truck_brand_name"])
            assert (row[f"{item}_price_usd"], row[f"{item}_chance"]) == pytest.approx((r["sale_price_usd"], r["score"]))
    assert not {"first_name", "e_mail", "preferred_language"} & set(rows.columns)  # personal: in the file only
    assert any("city: Tokyo" in m.value for m in at.markdown)


def test_model_page(app_ws, monkeypatch):
    at = app_test(app_ws, monkeypatch)
    at.switch_page("pages/model.py").run()
    assert not at.exception, at.exception
    assert any("Champion: tastyrec-dlrm version 1" in m.value for m in at.markdown)
    from tastyrec.registry.loading import load_evaluation

    evaluation = load_evaluation(app_ws, 1)["evaluation"]
    table = at.dataframe[0].value
    assert table["method"].tolist() == [evaluation["model_name"], *evaluation["baselines"],
                                        *(["oracle (truth)"] if evaluation["oracle"] else [])]
    assert table.loc[0, "ndcg@10"] == f"{evaluation['model']['ndcg@10']:.3f}"
    missing = [(i, m) for i, (name, figures) in enumerate([(None, evaluation["model"]), *evaluation["baselines"].items()])
               for m, v in figures.items() if m in table.columns and v is None]
    assert missing and all(table.loc[i, m] == "–" for i, m in missing)  # not "None"
    # the headline in plain words: the top 10 against each customer's usual items
    model, repeat = evaluation["model"], evaluation["baselines"]["repeat"]
    headline = next(m.value for m in at.markdown if m.value.startswith("**Of the menu items customers bought"))
    assert f"top 10 held {model['recall@10']:.0%}**" in headline
    assert f"usual items (their 10 most bought) held {repeat['recall@10']:.0%}" in headline
    assert f"new to the customer, the top 10 held {model['new_recall@10']:.0%}" in headline
    assert len(at.get("vega_lite_chart")) == 1  # the loss curves
    assert at.dataframe[1].value["version"].tolist() == [1]


def test_service_backend_gives_the_same_result(app_ws, monkeypatch):
    import uvicorn

    from tastyrec.service import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app_ws), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started
        remote = result_of(get_recommendations(app_test(app_ws, monkeypatch, f"http://127.0.0.1:{port}"),
                                               city=["Tokyo"], not_ordered=True))
        local = result_of(get_recommendations(app_test(app_ws, monkeypatch), city=["Tokyo"], not_ordered=True))
        assert remote["customers"] and remote["customers"] == local["customers"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_cli_refuses_a_workspace_without_warehouse(tmp_path):
    from tastyrec.cli import app

    result = CliRunner().invoke(app, ["--home", str(tmp_path), "app"])
    assert result.exit_code == 1 and "no warehouse" in result.output
    argv = command(tmp_path, port=8600, service="http://127.0.0.1:8000")
    assert argv[argv.index("--browser.gatherUsageStats") + 1] == "false"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[-4:] == ["--home", str(tmp_path), "--service", "http://127.0.0.1:8000"]


def test_the_app_shows_no_error_details_in_the_browser(tmp_path):
    from streamlit.config import ShowErrorDetailsConfigOptions

    argv = command(tmp_path)
    flag = argv.index("--client.showErrorDetails")
    assert flag < argv.index("--") and argv[flag + 1] == ShowErrorDetailsConfigOptions.NONE.value == "none"


SECRET = "/secret/path/warehouse.duckdb"


def failure(action: str) -> Exception:
    """What the action meets: an exception whose text (a path, a PID) must not reach the browser."""
    import duckdb

    return {"get recommendations": duckdb.IOException(f'IO Error: Could not read file "{SECRET}" (PID 4242)'),
            "save": OSError(f"{SECRET}: injected"),
            "open the campaign": RuntimeError(f"lost {SECRET}")}[action]


@pytest.mark.parametrize("action", ["get recommendations", "save", "open the campaign"])
def test_unexpected_failures_show_one_plain_line_and_log_the_details(app_ws, monkeypatch, caplog, action):
    error = failure(action)

    def boom(*args, **kwargs):
        raise error

    at = app_test(app_ws, monkeypatch)
    if action == "get recommendations":
        monkeypatch.setattr(LocalEngine, "recommend", boom)
        at.button(key="get_recommendations").click().run()
    else:
        get_recommendations(at, city=["Tokyo"])
        if action == "save":
            monkeypatch.setattr("tastyrec.campaigns.save", boom)
            at.text_input(key="campaign_name").input("doomed")
            at.button(key="save").click().run()
        else:
            run_id = save(at, "to fail reopening")
            at.switch_page("pages/campaigns.py").run()
            monkeypatch.setattr("tastyrec.app.data.campaign_rows", boom)
            at.selectbox(key="campaign_run").select(run_id).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [f"could not {action}: something went wrong ({type(error).__name__}); "
                                           "the details are in the log of `tastyrec app`"]
    assert SECRET not in " ".join(str(e.value) for e in [*at.markdown, *at.success, *at.info, *at.warning])
    assert SECRET in caplog.text and "Traceback" in caplog.text  # for whoever runs the app


def test_a_busy_warehouse_or_a_full_disk_on_save_is_an_error_not_a_traceback(app_ws, monkeypatch):
    at = get_recommendations(app_test(app_ws, monkeypatch), city=["Tokyo"])
    at.text_input(key="campaign_name").input("busy")
    with held_open(app_ws.warehouse, read_only=True) as pid:  # a notebook reading the warehouse
        at.button(key="save").click().run()
    assert not at.exception, at.exception
    [busy] = [e.value for e in at.error]
    assert busy.startswith("nothing was saved: ") and f"PID {pid}" in busy and "save again" in busy

    def full(writer, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("pyarrow.parquet.ParquetWriter.__init__", full)
    at.button(key="save").click().run()
    assert not at.exception, at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith(f"no space left on device while writing {app_ws.stage / 'recommendations'}")
    assert error.endswith("; nothing was changed")
    assert sql(app_ws, "SELECT count(*) FROM ml.recommendations WHERE name = 'busy'") == [(0,)]


@pytest.mark.parametrize("name, message", [
    ("x" * 101, "a campaign name has at most 100 characters; this one has 101"),
    ("spring\x00menu", "a campaign name cannot hold control characters"),
    ("spring\nmenu", "a campaign name cannot hold control characters"),
], ids=["too long", "NUL", "newline"])
def test_odd_campaign_names_are_refused_in_the_app(app_ws, monkeypatch, name, message):
    at = get_recommendations(app_test(app_ws, monkeypatch), city=["Tokyo"])
    at.text_input(key="campaign_name").input(name)
    at.button(key="save").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error][0].startswith(message)
    assert not any(s.value.startswith("Saved campaign") for s in at.success)
    assert sql(app_ws, "SELECT count(*) FROM ml.recommendations WHERE name = ?", name) == [(0,)]


FORMULA = '=HYPERLINK("http://evil","x")'


def downloads(monkeypatch) -> dict[str, bytes]:
    """The files the app hands the browser, by file name, as they are handed over (AppTest drops
    its media store after each run); a download made on click (a callable) as if clicked."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files, real, deferred = {}, MemoryMediaFileStorage.load_and_get_id, MediaFileManager.add_deferred

    def keep(self, path_or_data, mimetype, kind, filename=None):
        files[filename] = path_or_data
        return real(self, path_or_data, mimetype, kind, filename)

    def clicked(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        files[file_name] = data_callable()
        return deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    monkeypatch.setattr(MediaFileManager, "add_deferred", clicked)
    return files


def test_formulas_are_text_in_the_csvs_and_exact_everywhere_else(app_ws, monkeypatch):
    real = LocalEngine.recommend

    def with_formulas(self, *args, **kwargs):  # values as a CSV source could bring them into the warehouse
        result = copy.deepcopy(real(self, *args, **kwargs))
        first = result["customers"][0]
        first["city"] = FORMULA
        first["recommendations"][0].update(menu_item_name="+Tacos", item_category="@SUM(A1)", score=-0.5)
        return result

    monkeypatch.setattr(LocalEngine, "recommend", with_formulas)
    files = downloads(monkeypatch)
    at = get_recommendations(app_test(app_ws, monkeypatch), city=["Tokyo"])
    assert files["recommendations.csv"] == at.session_state["shown"].csv
    download = list(csv.DictReader(io.StringIO(files["recommendations.csv"].decode())))
    assert download[0]["item_1"] == "'+Tacos" and float(download[0]["item_1_chance"]) == -0.5  # a number stays one
    assert at.dataframe[0].value["city"].iloc[0] == FORMULA  # the table shows the value as it is
    first_customer = at.dataframe[0].value["customer_id"].iloc[0]

    run_id = save(at, FORMULA, holdout=0)  # the first customer is sent, whatever the draw
    assert any(literal(FORMULA) in s.value for s in at.success)  # Markdown shows it as typed
    with open(app_ws.stage / "recommendations" / f"hyperlink-http-evil-x-{run_id}.csv", newline="") as f:
        staged = [r for r in csv.DictReader(f) if int(r["customer_id"]) == first_customer]
    assert [(r["item_1"], float(r["item_1_chance"])) for r in staged] == [("'+Tacos", -0.5)]
    assert sql(app_ws, "SELECT DISTINCT name FROM ml.recommendations WHERE run_id = ?", run_id) == [(FORMULA,)]

    at.switch_page("pages/campaigns.py").run()
    at.selectbox(key="campaign_run").select(run_id).run()
    assert not at.exception, at.exception
    reopened = [r for r in csv.DictReader(io.StringIO(files[f"hyperlink-http-evil-x-{run_id}.csv"].decode()))
                if int(r["customer_id"]) == first_customer]
    assert [(r["item_1"], float(r["item_1_chance"])) for r in reopened] == [("'+Tacos", -0.5)]
    assert "+Tacos" in at.dataframe[1].value["item_1"].tolist()


# ---- a real browser ---------------------------------------------------------------------------
def wait_for_health(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"`tastyrec app` exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {TIMEOUT_S} s")


def pick(page, label: str, value: str) -> None:
    """Choose one value of a multiselect (a combobox): type it, click its option."""
    box = page.get_by_role("combobox", name=label)
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")


def wait_idle(page) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=TIMEOUT_S * 1000)


def test_browser_flow(app_ws, capsys, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get)"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in (SERVICE_ENV, "TASTYREC_HOME")}
    process = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(app_ws.home), "app",
                                "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        wait_for_health(url, process)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.set_default_timeout(TIMEOUT_S * 1000)
            page.goto(url)
            page.get_by_role("button", name="Get Recommendations").wait_for()  # the model is open
            pick(page, "Country", "Japan")
            pick(page, "City", "Tokyo")
            page.get_by_text("Trucks not visited").click()
            page.get_by_text("Menu items not ordered").click()
            wait_idle(page)

            started = time.perf_counter()
            page.get_by_role("button", name="Get Recommendations").click()
            grid = page.get_by_test_id("stDataFrame").first.locator("table[role=grid]")
            grid.wait_for(state="attached")
            with capsys.disabled():  # a figure for the log, not an assertion
                print(f"\nGet Recommendations for one city (Tokyo, both flags) to the table: "
                      f"{time.perf_counter() - started:.2f} s")
            summary = page.get_by_text(re.compile(r"^\d+ match; (all )?\d+ get a list")).inner_text()
            customers = int(re.search(r"(\d+) get a list", summary).group(1))
            assert customers > 0 and grid.get_attribute("aria-rowcount") == str(customers + 1)  # + header
            assert "Tokyo" in grid.locator("td").all_inner_texts()

            page.get_by_label("Campaign name").fill("Tokyo from the browser")
            page.get_by_role("button", name="Save", exact=True).click()
            confirmation = page.get_by_text(re.compile(r"^Saved campaign")).inner_text()
            run_id = re.search(r"as run (\S+) \(", confirmation).group(1)
            screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "app.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"app at {url}" in output
    rows = sql(app_ws, "SELECT count(DISTINCT customer_id), min(name) FROM ml.recommendations WHERE run_id = ?", run_id)
    assert rows == [(customers, "Tokyo from the browser")]
