"""The whole pipeline through the CLI: setup -> features -> torchrun training -> evaluation ->
MLflow registry, on a small generated data set."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.registry import list_versions

METHODS = {"popularity", "city_popularity", "item_knn", "als", "repeat", "repeat_recent", "seed-dlrm"}


def run(home, *args: str) -> dict:
    result = CliRunner().invoke(app, ["--home", str(home), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    home = tmp_path_factory.mktemp("pipeline")
    job = run(home, "pipeline", "--customers", "400", "--epochs", "2", "--seed-samples", "2000")
    return Workspace.from_env(home), job


@pytest.fixture
def own_home(piped, tmp_path):
    """A copy of the pipeline's workspace for a test that adds versions or moves the champion,
    so that the tests pass in any order."""
    ws, job = piped
    home = shutil.copytree(ws.home, tmp_path / "home")
    return Workspace.from_env(home), job


def test_pipeline_reports_model_baselines_and_oracle(piped):
    ws, job = piped
    evaluation = job["evaluation"]
    assert set(evaluation["baselines"]) == METHODS
    metrics = {"auc", "precision", "recall", "recall@3", "ndcg@3", "recall@10", "ndcg@10",
               "new_recall@10", "new_ndcg@10"}
    for scores in [evaluation["model"], evaluation["oracle"], *evaluation["baselines"].values()]:
        assert metrics <= set(scores)
    assert 0 < evaluation["model"]["ndcg@10"] <= 1
    assert evaluation["oracle"]["ndcg@10"] >= evaluation["baselines"]["popularity"]["ndcg@10"]
    assert evaluation["fraction_of_oracle_ndcg10"] == pytest.approx(
        evaluation["model"]["ndcg@10"] / evaluation["oracle"]["ndcg@10"])
    assert job["registry"]["version"] == 1 and job["registry"]["promoted"]
    assert job["setup"]["row_counts"]["raw_customer.customer_loyalty"] == 400
    history = job["train"]["result"]["history"]
    assert len(history) >= 1 and all("val_loss" in h for h in history)


def test_two_process_torchrun_training_registers_and_gate_decides(own_home):
    ws, first = own_home
    job = run(ws.home, "train", "--nproc", "2", "--epochs", "1", "--seed-samples", "0")
    assert job["train"]["result"]["world_size"] == 2
    assert job["registry"]["version"] == 2
    better = job["evaluation"]["model"]["ndcg@10"] > first["evaluation"]["model"]["ndcg@10"]
    assert job["registry"]["promoted"] == better
    versions = {v["version"]: v for v in list_versions(ws)}
    champion = 2 if better else 1
    assert "champion" in versions[champion]["aliases"]


def test_evaluate_a_registered_version(piped):
    ws, job = piped
    evaluation = run(ws.home, "evaluate", "--version", "1")
    assert evaluation["version"] == 1
    assert evaluation["model"]["ndcg@10"] == pytest.approx(job["evaluation"]["model"]["ndcg@10"], abs=1e-6)
    # the seed baseline is the one trained with version 1 (logged with it), not a newer one on disk
    seed = job["evaluation"]["baselines"]["seed-dlrm"]["ndcg@10"]
    assert evaluation["baselines"]["seed-dlrm"]["ndcg@10"] == pytest.approx(seed, abs=1e-6)


def test_registry_commands_move_the_champion(own_home):
    ws, _ = own_home
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(ws.home), "registry", "promote", "1"]).exit_code == 0
    listed = run(ws.home, "registry", "list")
    assert "champion" in next(v for v in listed if v["version"] == 1)["aliases"]
    missing = runner.invoke(app, ["--home", str(ws.home), "registry", "promote", "99"])
    assert missing.exit_code == 1 and "99" in missing.output


def test_train_refuses_a_workspace_without_features(tmp_path):
    runner = CliRunner()
    empty = runner.invoke(app, ["--home", str(tmp_path), "train"])
    assert empty.exit_code == 1 and "tastyrec features" in empty.output


def test_a_killed_run_resumes_from_its_checkpoint(own_home):
    from tastyrec.experiment import train_model
    from tastyrec.options import TrainOptions

    ws, _ = own_home
    first = train_model(ws, TrainOptions(epochs=1, progress=False, seed=3))
    shutil.rmtree(first.model_dir)  # as if the run had been killed after its first epoch
    resumed = train_model(ws, TrainOptions(epochs=2, progress=False, seed=3, resume=True))
    assert resumed.run_dir == first.run_dir
    history = resumed.result["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first.result["history"][0]  # epoch 1 was not trained again


def test_the_cli_prints_tables_and_no_third_party_noise(own_home):
    """The human-readable output of train and evaluate, as a user sees it in a log (no terminal):
    our tables and decisions, none of the known library warnings, no raw colour codes."""
    import subprocess
    import sys

    ws, _ = own_home

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "tastyrec.cli", "--home", str(ws.home), *args],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    trained = cli("train", "--epochs", "1", "--seed-samples", "0")
    evaluated = cli("evaluate", "--version", "2")
    features = cli("features")
    assert "tastyrec dlrm" in trained.stdout and "oracle (truth)" in trained.stdout
    assert "version 2 (ndcg@10" in trained.stdout and "champion" in trained.stdout
    assert "version 2 of the registered model" in evaluated.stdout
    assert "version 2 (dlrm)" in evaluated.stdout and "x the best baseline's" in evaluated.stdout
    assert "epoch 1: train" in trained.stderr  # our own progress lines stay
    noise = ("fetch_arrow_table", "noload", "CloudPickle", "Downloading artifacts", "DeprecationWarning",
             "INFO mlflow")
    for done in (trained, evaluated, features):
        for text in noise:
            assert text not in done.stderr, (text, done.stderr[-2000:])
    assert "Materializing" in features.stderr and "\x1b[" not in features.stderr


def test_a_random_split_version_is_gated_on_the_time_window(own_home):
    """The random split leaks its labels into its features; a version trained on it is scored on
    the same rows as every other version (the time split's test window) and marked as such."""
    ws, first = own_home
    job = run(ws.home, "train", "--split", "random", "--epochs", "1", "--seed-samples", "0")
    evaluation, yardstick = job["evaluation"], first["evaluation"]
    assert evaluation["training_split"] == "random"
    assert (evaluation["rows"], evaluation["customers"]) == (yardstick["rows"], yardstick["customers"])
    assert evaluation["oracle"]["ndcg@10"] == pytest.approx(yardstick["oracle"]["ndcg@10"])
    assert evaluation["baselines"]["item_knn"] == yardstick["baselines"]["item_knn"]
    again = run(ws.home, "evaluate", "--version", "2")  # what evaluate says is what the gate saw
    assert again["model"]["ndcg@10"] == pytest.approx(evaluation["model"]["ndcg@10"], abs=1e-6)
    better = evaluation["model"]["ndcg@10"] > yardstick["model"]["ndcg@10"]
    assert job["registry"]["promoted"] == better
    listed = {v["version"]: v for v in run(ws.home, "registry", "list")}
    assert listed[2]["training_split"] == "random" and listed[1]["training_split"] == "time"
    table = CliRunner().invoke(app, ["--home", str(ws.home), "registry", "list"]).output
    assert "random split (leaky)" in table


def test_pipeline_reuses_the_warehouse_unless_forced(own_home):
    import duckdb

    ws, _ = own_home
    with duckdb.connect(str(ws.warehouse)) as con:
        con.execute("INSERT INTO ml.recommendations VALUES (?, now()::TIMESTAMP, '1', NULL, 1, 1, ?, 0.5, 'spring')",
                    ["kept-run", "Italian"])
    before = ws.warehouse.read_bytes()
    reused = run(ws.home, "pipeline", "--customers", "300", "--epochs", "1", "--seed-samples", "0")
    assert reused["reused_warehouse"] and reused["setup"] is None
    assert ws.warehouse.read_bytes() == before  # not rebuilt, not even touched
    forced = run(ws.home, "pipeline", "--customers", "300", "--epochs", "1", "--seed-samples", "0", "--force")
    assert not forced["reused_warehouse"]
    assert forced["setup"]["row_counts"]["raw_customer.customer_loyalty"] == 300
    with duckdb.connect(str(ws.warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ml.recommendations WHERE run_id = ?",
                           ["kept-run"]).fetchone()[0] == 1  # saved recommendations are kept
