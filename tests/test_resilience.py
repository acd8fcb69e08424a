"""A running service through interrupted and completed features runs, rebuilt data and a broken
online store: it keeps answering what it served, reloads everything on /admin/reload, and says
503 with the reason (on /health too) when it cannot answer. Real uvicorn, real Feast."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from test_service import Server
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import PROGRESS_LOG, Workspace
from tastyrec.features.build import CACHE_TTL_ENV, build_features, feature_store
from tastyrec.features.stores import SQLITE_FILE
from tastyrec.warehouse.load import connect

TTL_S = 1  # Feast's registry cache of the runs these tests build: expired within the test, not in 600 s


@pytest.fixture
def home(trained_ws, tmp_path, monkeypatch) -> Workspace:
    """A copy of the trained workspace whose features run caches its registry for TTL_S."""
    monkeypatch.setenv(CACHE_TTL_ENV, str(TTL_S))
    ws = Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path / "home"))
    build_features(ws)
    return ws


@pytest.fixture
def served(home):
    server = Server(home.home)
    yield server
    server.stop()


def ask(server: Server, ids=(5, 7)) -> httpx.Response:
    return httpx.post(f"{server.url}/recommendations", json={"customer_ids": list(ids)}, timeout=60)


def features_interrupted(ws: Workspace, tmp_path, at: str = "feast apply") -> int:
    """`tastyrec features` in a child process, stopped with Ctrl-C (SIGINT) as soon as the stage
    `at` is logged (`feast apply`: during materialisation); returns its exit status."""
    log = tmp_path / "progress.log"
    log.unlink(missing_ok=True)
    env = os.environ | {PROGRESS_LOG: str(log)}
    # SIGINT as the default action in the child: a test run started in the background (`make test &`,
    # nohup) passes SIGINT on as ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(ws.home), "features"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and at in log.read_text():
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.01)
    return proc.wait(60)


def test_an_interrupted_features_run_changes_nothing_a_service_reads(home, served, tmp_path):
    before = ask(served).json()
    # the same model and features; "scores" may move on from "precomputing" meanwhile (its own thread)
    health = {k: v for k, v in httpx.get(f"{served.url}/health").json().items() if k != "scores"}
    # a run that ends before the signal lands (materialisation is quick on a busy machine) is tried
    # again, stopped earlier: while it computes the feature snapshots
    for at in ("feast apply", "feature snapshots", "feature snapshots"):
        pointer, summary = home.features_pointer.read_text(), (home.feature_repo / "summary.json").read_text()
        data = {p.name: p.stat().st_mtime_ns for p in (home.feature_repo / "data").iterdir()}
        runs = sorted(p.name for p in home.feature_runs.iterdir())
        status = features_interrupted(home, tmp_path, at)
        if status != 0:
            break
    assert status == 130, f"the interrupted run exited with {status}"
    time.sleep(TTL_S + 1)  # past Feast's registry cache: what a reader sees now is on disk
    after = ask(served)
    assert after.status_code == 200, after.text
    assert after.json()["customers"] == before["customers"]
    assert {k: v for k, v in httpx.get(f"{served.url}/health").json().items() if k != "scores"} == health
    assert home.features_pointer.read_text() == pointer and (home.feature_repo / "summary.json").read_text() == summary
    assert {p.name: p.stat().st_mtime_ns for p in (home.feature_repo / "data").iterdir()} == data
    assert sorted(p.name for p in home.feature_runs.iterdir()) == runs  # the cut run is gone
    done = CliRunner().invoke(app, ["--home", str(home.home), "recommend", "--customer", "5", "--json"])
    assert done.exit_code == 0, done.output


def test_features_feast_will_not_serve_are_a_503_with_the_reason_on_health_too(home, served):
    """Feast refuses to serve a feature view left MATERIALIZING (a materialisation cut short in a
    store shared by hand): the service says so with 503, /health too, and recovers by itself."""
    from feast.feature_view import FeatureViewState

    store = feature_store(home)
    view = store.get_feature_view("customer_features")
    view.state = FeatureViewState.MATERIALIZING
    store.registry.apply_feature_view(view, store.project, commit=True)
    time.sleep(TTL_S + 1)
    refused, health = ask(served), httpx.get(f"{served.url}/health")
    assert refused.status_code == 503 and "MATERIALIZING" in refused.json()["detail"]
    assert "run `tastyrec features`" in refused.json()["detail"]
    assert health.status_code == 503 and "MATERIALIZING" in health.json()["detail"]

    view.state = FeatureViewState.AVAILABLE_ONLINE
    store.registry.apply_feature_view(view, store.project, commit=True)
    time.sleep(TTL_S + 1)
    assert ask(served).status_code == 200 and httpx.get(f"{served.url}/health").status_code == 200


def test_reload_reads_the_new_features_customers_and_cities(home, served):
    """After new data and a features run, /admin/reload serves all of it: a new customer is known
    and a customer who moved is placed in the new city, with that city's candidates."""
    con = connect(home.warehouse)
    try:
        (old_city,), = con.execute("SELECT city FROM raw_customer.customer_loyalty WHERE customer_id = 5").fetchall()
        (city, country), = con.execute("SELECT city, country FROM raw_customer.customer_loyalty WHERE city <> ? "
                                       "GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1", [old_city]).fetchall()
        con.execute("UPDATE raw_customer.customer_loyalty SET city = ?, country = ? WHERE customer_id = 5",
                    [city, country])
        con.execute("INSERT INTO raw_customer.customer_loyalty SELECT * REPLACE (777777 AS customer_id) "
                    "FROM raw_customer.customer_loyalty WHERE customer_id = 7")
        candidates = {i for (i,) in con.execute(
            "SELECT DISTINCT m.menu_item_name FROM raw_pos.truck t JOIN raw_pos.menu m USING (menu_type_id) "
            "WHERE t.primary_city = ? AND m.item_category <> 'Beverage'", [city]).fetchall()}
    finally:
        con.close()
    served_run = httpx.get(f"{served.url}/health").json()["features"]
    assert ask(served, (777777,)).status_code == 404  # not known before the reload
    build_features(home)
    reloaded = httpx.post(f"{served.url}/admin/reload", timeout=120)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["features"] == home.feature_repo.name != served_run
    body = ask(served, (5, 777777)).json()
    moved, new = body["customers"]
    assert new["customer_id"] == 777777 and new["recommendations"]
    assert (moved["city"], moved["country"]) == (city, country)
    assert {r["menu_item_name"] for r in moved["recommendations"]} <= candidates


def test_a_missing_or_locked_online_store_is_a_503_and_a_plain_cli_error(home, served):
    online = home.feature_repo / SQLITE_FILE
    moved = online.with_suffix(".away")
    online.rename(moved)
    try:
        gone = ask(served)
        assert gone.status_code == 503 and "is missing" in gone.json()["detail"]
        assert httpx.get(f"{served.url}/health").status_code == 503
        cli = CliRunner().invoke(app, ["--home", str(home.home), "recommend", "--customer", "5"])
        assert cli.exit_code == 1 and "run `tastyrec features`" in cli.output and "Traceback" not in cli.output
        assert not online.exists()  # nothing created in its place
    finally:
        moved.rename(online)
    assert ask(served).status_code == 200

    holder = sqlite3.connect(online, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = ask(served)
        assert locked.status_code == 503 and "cannot be read" in locked.json()["detail"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ask(served).status_code == 200
