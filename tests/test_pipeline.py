"""The whole pipeline through the CLI: setup -> features -> torchrun training -> evaluation ->
MLflow registry, on a small generated data set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.registry import list_versions

METHODS = {"popularity", "city_popularity", "item_knn", "als", "repeat", "repeat_recent", "tifu_knn", "seed-dlrm"}


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
    tifu = evaluation["tifu_knn"]  # its settings, chosen on the validation window
    assert tifu["chosen_on"] == "validation" and 0 < tifu["validation_ndcg@10"] <= 1 and tifu["m"] == 7
    assert evaluation["baselines"]["tifu_knn"]["ndcg@10"] > evaluation["baselines"]["popularity"]["ndcg@10"]
    assert job["setup"]["row_counts"]["raw_customer.customer_loyalty"] == 400
    history = job["train"]["result"]["history"]
    assert len(history) >= 1 and all("val_loss" in h for h in history)


def zeroed_model(ws: Workspace, version: int, target) -> Path:
    """A copy of a version's model folder whose weights are all zero: it scores every item 0.5,
    a ranking that knows nothing."""
    import torch

    from tastyrec.model import MODEL_FILE, save_model
    from tastyrec.registry.tracking import client

    bound = client(ws)
    folder = Path(bound.get_run(bound.get_model_version("tastyrec-dlrm", str(version)).run_id)
                  .data.tags["tastyrec.model_dir"])
    copy = Path(shutil.copytree(folder, target))
    saved = torch.load(copy / MODEL_FILE, weights_only=True)
    save_model(copy / MODEL_FILE, {k: torch.zeros_like(v) for k, v in saved["state_dict"].items()},
               saved["model_kind"], saved["model_config"])
    return copy


def test_two_process_torchrun_training_is_gated_on_the_same_rows(own_home, monkeypatch, tmp_path):
    """torchrun with 2 processes trains a version; the gate scores the champion on its rows and
    refuses it (at 400 customers the DLRM loses to repeat), then promotes one over a champion
    that knows nothing when no baseline stands in the way."""
    from tastyrec import evaluate
    from tastyrec.evaluate import Evaluation
    from tastyrec.registry import log_and_register, promote

    ws, first = own_home
    job = run(ws.home, "train", "--nproc", "2", "--epochs", "1", "--seed-samples", "0")
    assert job["train"]["result"]["world_size"] == 2 and job["registry"]["version"] == 2
    ev = job["evaluation"]
    assert ev["champion"]["version"] == 1 and ev["window"] == first["evaluation"]["window"]
    assert ev["champion"]["metrics"]["ndcg@10"] == pytest.approx(first["evaluation"]["model"]["ndcg@10"], abs=1e-6)
    best = ev["best_baseline"]  # TIFU-KNN among them
    assert "tifu_knn" in ev["baselines"] and best == max(ev["baselines"], key=lambda b: ev["baselines"][b]["ndcg@10"])
    assert ev["model"]["ndcg@10"] < ev["baselines"][best]["ndcg@10"]  # what makes this a refusal
    assert not job["registry"]["promoted"] and f"the best baseline, {best}" in job["registry"]["decision"]
    assert "scored now on the same rows" in job["registry"]["decision"]

    blank = log_and_register(ws, zeroed_model(ws, 1, tmp_path / "zeroed"), {"zeroed": True}, [],
                             Evaluation("zeroed", {"ndcg@10": 0.99}, {}, None, 0, 0, 0),
                             input_example=pd.read_parquet(ws.home / "datasets" / "time" / "test.parquet").head(5))
    promote(ws, blank.version)  # its stored 0.99 is from no real window: it must be scored again
    real = evaluate.score_all
    monkeypatch.setattr(evaluate, "score_all", lambda *a: {k: v for k, v in real(*a).items() if k == "oracle"})
    won = run(ws.home, "train", "--nproc", "2", "--epochs", "1", "--seed-samples", "0")
    assert won["evaluation"]["champion"]["version"] == blank.version == 3
    assert won["evaluation"]["model"]["ndcg@10"] > won["evaluation"]["champion"]["metrics"]["ndcg@10"]
    assert won["registry"]["promoted"], won["registry"]["decision"]
    versions = {v["version"]: v for v in list_versions(ws)}
    assert "champion" in versions[4]["aliases"] and versions[4]["test_window"] == ev["window"]


def test_the_gate_scores_the_champion_on_a_new_test_window(own_home):
    """New windows (14 days) after a champion measured on 91-day windows: the champion is scored
    on the new window's rows, as `evaluate --version 1` scores it there."""
    ws, first = own_home
    run(ws.home, "features", "--window-days", "14", "--train-windows", "1")
    job = run(ws.home, "train", "--epochs", "1", "--seed-samples", "0")
    again = run(ws.home, "evaluate", "--version", "1")
    assert job["evaluation"]["window"] == again["window"] != first["evaluation"]["window"]
    assert "+ 14 days" in again["window"] and "+ 91 days" in first["evaluation"]["window"]
    champion = job["evaluation"]["champion"]["metrics"]["ndcg@10"]
    assert champion == pytest.approx(again["model"]["ndcg@10"], abs=1e-6)
    assert champion != pytest.approx(first["evaluation"]["model"]["ndcg@10"], abs=1e-3)  # the stale figure
    assert f"champion version 1 ({champion:.4f}, scored now on the same rows)" in job["registry"]["decision"]
    listed = {v["version"]: v["test_window"] for v in run(ws.home, "registry", "list")}
    assert listed == {1: first["evaluation"]["window"], 2: again["window"]}


def test_evaluate_refuses_features_of_another_warehouse(own_home):
    """A rebuilt warehouse without new features: evaluate and train refuse (the old test rows
    against the new truth gave an oracle below the model); after `features` the oracle leads."""
    ws, _ = own_home
    run(ws.home, "setup", "--customers", "400", "--seed", "43", "--force")
    runner = CliRunner()
    for args in (["evaluate", "--version", "1"], ["train", "--epochs", "1", "--seed-samples", "0"]):
        refused = runner.invoke(app, ["--home", str(ws.home), *args])
        assert refused.exit_code == 1 and "run `tastyrec features`" in refused.output, refused.output
        assert "another warehouse" in refused.output
    run(ws.home, "features")
    evaluation = run(ws.home, "evaluate", "--version", "1")
    best = max(m["ndcg@10"] for m in [evaluation["model"], *evaluation["baselines"].values()])
    assert evaluation["oracle"]["ndcg@10"] >= best


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

    trained = cli("train", "--epochs", "1", "--seed-samples", "0", "--reprobe")
    evaluated = cli("evaluate", "--version", "2")
    features = cli("features")
    assert "tastyrec dlrm" in trained.stdout and "oracle (truth)" in trained.stdout and "tifu_knn" in trained.stdout
    assert "version 2 (ndcg@10" in trained.stdout and "champion" in trained.stdout
    assert "version 2 of the registered model" in evaluated.stdout
    assert "version 2 (dlrm)" in evaluated.stdout and "x the best baseline's" in evaluated.stdout
    assert "dlrm probe, epoch 1/1: loss" in trained.stderr  # our own progress lines stay (--model auto: probes)
    noise = ("fetch_arrow_table", "noload", "CloudPickle", "Downloading artifacts", "DeprecationWarning",
             "INFO mlflow")
    for done in (trained, evaluated, features):
        for text in noise:
            assert text not in done.stderr, (text, done.stderr[-2000:])
    assert "Materializing" not in features.stderr and "\x1b[" not in features.stderr  # Feast's own lines: a terminal's only


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
