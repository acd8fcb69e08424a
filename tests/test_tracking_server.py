"""A team's MLflow tracking server: `mlflow server` on a loopback port (SQLite backend, an
artifact folder, artifacts proxied); train / register / promote / evaluate / serve through it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from servers import MlflowServer, free_port
from test_service import Server

from tastyrec.config import Workspace
from tastyrec.predictor import Predictor
from tastyrec.recommend import Engine
from tastyrec.registry import clear_cache, list_versions, load_predictor
from tastyrec.registry.lineage import warehouse_fingerprint

CUSTOMERS = [5, 21, 64, 128]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def tastyrec(home, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tastyrec.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_promote_evaluate_and_serve_through_a_tracking_server(trained_ws, mlflow_server, tmp_path,
                                                                     monkeypatch):
    home = shutil.copytree(trained_ws.home, tmp_path / "home")
    (home / "mlflow.db").unlink()  # nothing local: runs, versions and artifacts live on the server
    shutil.rmtree(home / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    ws = Workspace.from_env(home)
    trained = [json.loads(tastyrec(home, "train", "--model", "dlrm", "--epochs", str(epochs), "--seed-samples", "0",
                                   "--json")) for epochs in (1, 2)]
    assert [t["registry"]["version"] for t in trained] == [1, 2]
    assert not (home / "mlflow.db").exists() and not (home / "mlartifacts").exists()
    assert len(list(mlflow_server.artifacts.rglob("model.pt"))) == 2  # in the server's folder, proxied

    shown = json.loads(tastyrec(home, "registry", "show", "2", "--json"))  # lineage through the server
    assert shown["lineage"]["warehouse"]["hash"] == warehouse_fingerprint(ws)["hash"] == shown["warehouse_fingerprint"]
    assert {d["context"] for d in shown["dataset_inputs"]} == {"train", "val", "test"} and shown["warehouse_drift"] is None

    listed = json.loads(tastyrec(home, "registry", "list", "--json"))
    assert [v["version"] for v in listed] == [2, 1] == [v["version"] for v in list_versions(ws)]
    champion = next(v["version"] for v in listed if "champion" in v["aliases"])
    other = 3 - champion
    assert f"champion moved to version {other}" in tastyrec(home, "registry", "promote", str(other))
    assert f"rolled back from version {other} to version {champion}" in tastyrec(home, "registry", "rollback")

    # the champion loaded through the server predicts as the model directory training wrote
    clear_cache()
    predictor, version = load_predictor(ws)
    assert version == champion
    rows = pq.read_table(home / "datasets" / "time" / "test.parquet").slice(0, 300).to_pandas()
    local = Predictor.from_dir(trained[champion - 1]["train"]["model_dir"])
    np.testing.assert_array_equal(predictor.predict(rows), local.predict(rows))

    evaluation = json.loads(tastyrec(home, "evaluate", "--json"))
    assert evaluation["version"] == champion
    registered = next(v for v in listed if v["version"] == champion)["metrics"]["ndcg@10"]
    assert evaluation["model"]["ndcg@10"] == pytest.approx(registered, abs=1e-9)

    expected = Engine(ws).recommend(CUSTOMERS, top_k=4).to_dict()
    service = Server(home)
    try:
        with service.client() as api:
            health = api.get("/health").json()
            served = api.post("/recommendations", json={"customer_ids": CUSTOMERS, "top_k": 4}).json()
    finally:
        assert service.stop() == 0, service.log.read_text()[-3000:]
    assert health["version"] == champion
    assert [c["recommendations"] for c in served["customers"]] == \
           [pd.DataFrame(c["recommendations"]).to_dict("records") for c in expected["customers"]]


@pytest.mark.parametrize("command", [("registry", "list"), ("train", "--epochs", "1"), ("evaluate",), ("serve",)])
def test_a_tracking_server_that_does_not_answer_is_named_at_once(trained_ws, tmp_path, monkeypatch, command):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    home = shutil.copytree(trained_ws.home, tmp_path / "home")
    before = sorted(p.name for p in (home / "checkpoints").iterdir())
    done = subprocess.run([sys.executable, "-m", "tastyrec.cli", "--home", str(home), *command],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"the MLflow tracking server at {os.environ['MLFLOW_TRACKING_URI']} (MLFLOW_TRACKING_URI) does not answer" \
        in done.stderr
    assert sorted(p.name for p in (home / "checkpoints").iterdir()) == before  # nothing was trained
