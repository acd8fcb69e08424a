"""The whole pipeline through the CLI: setup -> features -> torchrun training -> evaluation ->
MLflow registry, on a small generated data set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.registry import list_versions

METHODS = {"popularity", "city_popularity", "item_knn", "als", "seed-dlrm"}


def run(home, *args: str) -> dict:
    result = CliRunner().invoke(app, ["--home", str(home), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    home = tmp_path_factory.mktemp("pipeline")
    job = run(home, "pipeline", "--customers", "400", "--epochs", "2", "--seed-samples", "2000")
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


def test_two_process_torchrun_training_registers_and_gate_decides(piped):
    ws, first = piped
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


def test_registry_commands_move_the_champion(piped):
    ws, _ = piped
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(ws.home), "registry", "promote", "1"]).exit_code == 0
    listed = run(ws.home, "registry", "list")
    assert "champion" in next(v for v in listed if v["version"] == 1)["aliases"]
    missing = runner.invoke(app, ["--home", str(ws.home), "registry", "promote", "99"])
    assert missing.exit_code == 1 and "99" in missing.output


def test_train_refuses_bad_options_and_missing_features(tmp_path):
    runner = CliRunner()
    empty = runner.invoke(app, ["--home", str(tmp_path), "train"])
    assert empty.exit_code == 1 and "tastyrec features" in empty.output


def test_a_killed_run_resumes_from_its_checkpoint(piped):
    import shutil

    from tastyrec.experiment import TrainOptions, train_model

    ws, _ = piped
    first = train_model(ws, TrainOptions(epochs=1, progress=False, seed=3))
    shutil.rmtree(first.model_dir)  # as if the run had been killed after its first epoch
    resumed = train_model(ws, TrainOptions(epochs=2, progress=False, seed=3, resume=True))
    assert resumed.run_dir == first.run_dir
    history = resumed.result["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first.result["history"][0]  # epoch 1 was not trained again
