"""The Redis online store: a real redis-server, recommendations equal to those through SQLite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from servers import RedisServer
from test_service import Server

from tastyrec.config import Workspace
from tastyrec.features.build import FeaturesError, build_features, built_features
from tastyrec.features.online import OnlineFeatures
from tastyrec.features.stores import OnlineStore, OnlineStoreError, configured
from tastyrec.recommend import Engine, RecommendError

CUSTOMERS = [3, 17, 42, 99, 250, 333]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_ws(trained_ws, redis_server, tmp_path_factory) -> Workspace:
    """A copy of the trained workspace whose features were built again into Redis."""
    ws = Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path_factory.mktemp("redis-ws") / "home"))
    build_features(ws, online_store=redis_server.url)
    return ws


def test_recommendations_through_redis_equal_those_through_sqlite(trained_ws, redis_ws, redis_server):
    yaml = (redis_ws.feature_repo / "feature_store.yaml").read_text()
    assert "type: redis" in yaml and f"127.0.0.1:{redis_server.port},db=0" in yaml and "sqlite" not in yaml
    assert configured(redis_ws).url == redis_server.url  # remembered by the workspace
    assert built_features(redis_ws).online_store == redis_server.url
    import redis

    assert redis.Redis(port=redis_server.port).dbsize() > 400  # the customers and items are in Redis
    sqlite_rows = OnlineFeatures(trained_ws).for_customers(CUSTOMERS)
    redis_rows = OnlineFeatures(redis_ws).for_customers(CUSTOMERS)
    assert len(sqlite_rows) > 10 * len(CUSTOMERS)
    pd.testing.assert_frame_equal(redis_rows, sqlite_rows)
    through_sqlite = Engine(trained_ws).recommend(CUSTOMERS, top_k=5).to_dict()
    through_redis = Engine(redis_ws).recommend(CUSTOMERS, top_k=5).to_dict()
    assert [c["recommendations"] for c in through_redis["customers"]] == \
           [c["recommendations"] for c in through_sqlite["customers"]]
    assert [c["history"] for c in through_redis["customers"]] == [c["history"] for c in through_sqlite["customers"]]
    assert any(c["history"] for c in through_redis["customers"])


def test_the_remembered_store_is_used_until_switched_back(redis_ws, redis_server, tmp_path):
    ws = Workspace.from_env(shutil.copytree(redis_ws.home, tmp_path / "home"))
    build_features(ws)  # no --online-store: the remembered Redis
    assert "type: redis" in (ws.feature_repo / "feature_store.yaml").read_text()
    build_features(ws, online_store="sqlite")
    assert "type: sqlite" in (ws.feature_repo / "feature_store.yaml").read_text()
    assert json.loads(ws.settings_file.read_text())["online_store"] == "sqlite"
    assert len(OnlineFeatures(ws).for_customers(CUSTOMERS)) > 0


@pytest.mark.parametrize("url", ["redis://127.0.0.1", "http://127.0.0.1:6379", "redis://h:99999/0", "mysql",
                                 "redis://[::1]:6379"])
def test_malformed_urls_are_refused_with_the_accepted_form(url):
    with pytest.raises(OnlineStoreError, match=r"redis://HOST:PORT\[/DB\]"):
        OnlineStore.parse(url)


def test_a_silent_server_is_refused_before_any_work_and_nothing_changes(redis_ws, redis_server, tmp_path):
    ws = Workspace.from_env(shutil.copytree(redis_ws.home, tmp_path / "home"))
    before = {p: p.stat().st_mtime_ns for p in (ws.feature_repo / "data").iterdir()}
    silent = RedisServer(tmp_path)
    silent.stop()  # a port where nothing listens now
    with pytest.raises(FeaturesError, match=f"Redis online store at redis://127.0.0.1:{silent.port}/0 does not answer"):
        build_features(ws, online_store=silent.url)
    assert {p: p.stat().st_mtime_ns for p in (ws.feature_repo / "data").iterdir()} == before
    assert configured(ws).url == redis_server.url


def test_redis_going_down_is_a_503_then_a_clear_refusal_to_start(redis_ws, tmp_path):
    ws = Workspace.from_env(shutil.copytree(redis_ws.home, tmp_path / "home"))
    own = RedisServer(tmp_path)
    try:
        build_features(ws, online_store=own.url)
        service = Server(ws.home)
        try:
            with service.client() as api:
                assert api.post("/recommendations", json={"customer_ids": CUSTOMERS[:2]}).status_code == 200
                own.stop()
                down = api.post("/recommendations", json={"customer_ids": CUSTOMERS[:2]})
        finally:
            assert service.stop() == 0, service.log.read_text()[-3000:]
    finally:
        own.stop()
    assert down.status_code == 503 and "online store (Redis) is unavailable" in down.json()["detail"]
    with pytest.raises(RecommendError, match="does not answer"):
        Engine(ws)


def test_a_pruned_run_takes_its_redis_rows_with_it(redis_ws, redis_server, tmp_path):
    """Runs older than the previous one are removed, their Redis rows (their own project's keys)
    too; the rows of the run served stay."""
    import redis

    ws = Workspace.from_env(shutil.copytree(redis_ws.home, tmp_path / "home"))
    client = redis.Redis(port=redis_server.port)

    def rows_of(run) -> int:
        return sum(1 for _ in client.scan_iter(b"*" + f"tastyrec_{Path(run.repo).name}".encode()))

    first = build_features(ws)  # built in this home: its rows are this home's to remove
    assert rows_of(first) > 400
    build_features(ws)
    last = build_features(ws)  # now `first` is older than the previous run
    assert not Path(first.repo).exists() and rows_of(first) == 0
    assert rows_of(last) > 400 and len(OnlineFeatures(ws).for_customers(CUSTOMERS)) > 0
