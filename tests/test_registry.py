"""Registry: a real MLflow SQLite store per home, a tiny real model, the champion gate by hand."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from typer.testing import CliRunner

from tastyrec import registry  # first: tastyrec switches telemetry off before MLflow is imported
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.evaluate import Evaluation
from tastyrec.model import model_config
from tastyrec.predictor import Predictor
from tastyrec.preprocess import Preprocessor, synthetic_frame
from tastyrec.registry import RegistryError, pyfunc
from tastyrec.registry.tracking import client as registry_client
from tastyrec.train import TrainConfig, train

import mlflow  # noqa: E402  (isort: after tastyrec)
from mlflow.telemetry import get_telemetry_client  # noqa: E402
from mlflow.types import DataType  # noqa: E402
from mlflow.types.schema import Array  # noqa: E402

GATE = {1: 0.40, 2: 0.30, 3: 0.45}  # test ndcg@10 of the three registered versions


def evaluation(ndcg: float, repeat: float = 0.2) -> Evaluation:
    """The model at `ndcg`; the best baseline is "repeat" at `repeat`."""
    return Evaluation(
        model_name="tastyrec dlrm",
        model={"auc": 0.71, "precision": 0.52, "recall": 0.33, "ndcg@10": ndcg, "recall@10": 0.6,
               "ndcg@3": ndcg - 0.1, "recall@3": 0.3, "new_ndcg@10": float("nan"), "new_recall@10": None,
               "customers": 120},
        baselines={"popularity": {"ndcg@10": 0.25, "recall@10": 0.4, "precision": None},
                   "item co-occurrence": {"ndcg@10": 0.28, "recall@10": 0.45},
                   "repeat": {"ndcg@10": repeat, "recall@10": 0.5}},
        oracle={"ndcg@10": 0.61, "recall@10": 0.8}, rows=1200, customers=120, test_customers_total=120,
    )


@dataclass
class Trained:
    model_dir: Path
    history: list[dict]
    frame: pd.DataFrame  # rows to score, with keys, label and an unseen-category row


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A real DLRM, 2,000 synthetic rows, one epoch, written as a model directory."""
    root = tmp_path_factory.mktemp("registry_model")
    prep = Preprocessor().fit(synthetic_frame(2000, seed=0))
    prep.transform(synthetic_frame(2000, seed=0)).save(root / "train.pt")
    prep.transform(synthetic_frame(500, seed=1)).save(root / "val.pt")
    cfg = model_config("dlrm", prep.cardinalities, prep.bag_sizes, len(prep.dense),
                       embedding_dim=8, bottom_mlp=[16], top_mlp=[32])
    result = train(TrainConfig(
        train_path=str(root / "train.pt"), val_path=str(root / "val.pt"), checkpoint_dir=str(root / "ckpt"),
        model_kind="dlrm", model_config=cfg, epochs=1, batch_size=256, lr=3e-3, seed=3, num_threads=1, progress=False,
    ))
    model_dir = Predictor.write_dir(root / "some_model_folder", prep, result.model_path)
    frame = synthetic_frame(200, seed=9).assign(customer_id=7)
    frame.loc[0, "city"] = "a city never seen in training"
    return Trained(model_dir, result.history, frame)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> tuple[Workspace, list[registry.RegisterResult]]:
    """One registry with three versions of the same model, whose test NDCG@10 are GATE."""
    ws = Workspace.from_env(tmp_path_factory.mktemp("registry_home"))
    results = []
    for version, ndcg in GATE.items():
        params = {"epochs": 1, "lr": 3e-3, "model": {"embedding_dim": 8, "top_mlp": [32]}, "run": version}
        results.append(registry.log_and_register(
            ws, trained.model_dir, params, trained.history, evaluation(ndcg),
            input_example=synthetic_frame(30, seed=4), description=f"test version {version}",
        ))
    return ws, results


@pytest.fixture
def home_copy(home, tmp_path: Path) -> Workspace:
    """A copy of the three-version registry for a test that moves the champion (any test order)."""
    ws, _ = home
    return Workspace.from_env(shutil.copytree(ws.home, tmp_path / "copy"))


def test_a_version_is_logged_with_params_metrics_artifacts_and_signature(home, trained: Trained) -> None:
    ws, results = home
    first = results[0]
    assert first.version == 1
    assert get_telemetry_client() is None  # MLflow never phones home
    client = registry_client(ws)
    run = client.get_run(first.run_id)
    assert run.info.experiment_id == client.get_experiment_by_name("tastyrec").experiment_id
    assert run.data.params["lr"] == "0.003" and run.data.params["model.top_mlp"] == "[32]"
    metrics = run.data.metrics
    assert metrics["test_ndcg_at_10"] == pytest.approx(0.40) and metrics["test_customers"] == 120
    assert "test_new_ndcg_at_10" not in metrics and "test_new_recall_at_10" not in metrics  # NaN, None
    curve = client.get_metric_history(first.run_id, "train_loss")
    assert [(m.step, m.value) for m in curve] == [(1, pytest.approx(trained.history[0]["train_loss"]))]
    assert [m.step for m in client.get_metric_history(first.run_id, "val_loss")] == [1]

    # artifacts live under <home>/mlartifacts; plots are real PNGs
    artifacts = {f.path for f in client.list_artifacts(first.run_id)}
    assert {"evaluation.json", "params.json", "plots"} <= artifacts
    assert {f.path for f in client.list_artifacts(first.run_id, "plots")} == {
        "plots/loss_curves.png", "plots/ranking_vs_baselines.png"}
    run_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert run_dir.is_relative_to(ws.mlartifacts)
    for png in ("loss_curves.png", "ranking_vs_baselines.png"):
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["model"]["new_ndcg@10"] is None and saved["oracle"]["ndcg@10"] == 0.61

    # the registered version: descriptions, metric tags, signature with list columns, example
    model = client.get_registered_model(registry.MODEL_NAME)
    assert "champion" in model.description
    mv = client.get_model_version(registry.MODEL_NAME, "1")
    assert mv.description == "test version 1" and mv.run_id == first.run_id
    assert float(mv.tags["test_ndcg_at_10"]) == 0.40 and mv.tags["model_kind"] == "dlrm"
    with registry.tracking(ws):
        info = mlflow.models.get_model_info("models:/tastyrec-dlrm/1")
    inputs = {c.name: c.type for c in info.signature.inputs.inputs}
    assert isinstance(inputs["history_items"], Array) and inputs["age"] == DataType.double
    assert info.saved_input_example_info["type"] == "dataframe"
    local = Path(client.get_model_version_download_uri(registry.MODEL_NAME, "1").removeprefix("file://"))
    assert local.is_relative_to(ws.mlartifacts)
    assert {p.name for p in (local / "artifacts" / "model_dir").iterdir()} >= {"preprocess.json", "model.pt"}
    example = json.loads((local / "input_example.json").read_text())
    assert len(example["data"]) == pyfunc.EXAMPLE_ROWS and "history_items" in example["columns"]


def test_signature_falls_back_to_an_explicit_schema(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where infer_signature cannot read list columns, the schema is spelled out from the model."""
    predictor = Predictor.from_dir(trained.model_dir)
    example = pyfunc.example(predictor, trained.frame)

    def choke(*args, **kwargs):
        raise TypeError("cannot infer a type for a list column")

    monkeypatch.setattr(pyfunc, "infer_signature", choke)
    signature = pyfunc.signature(predictor, example, predictor.predict(example))
    specs = {c.name: c for c in signature.inputs.inputs}
    assert list(specs) == predictor.preprocessor.input_columns
    assert "item_knn_score" not in specs  # computed from the item and its history bag
    assert specs["city"].type == DataType.string and specs["age"].type == DataType.double
    assert isinstance(specs["history_brands"].type, Array) and not specs["history_brands"].required
    # pyfunc's schema enforcement accepts the example under the explicit schema
    from mlflow.models.utils import _enforce_schema

    assert len(_enforce_schema(example, signature.inputs)) == len(example)


def test_pyfunc_and_load_predictor_score_like_the_model_in_memory(home, trained: Trained) -> None:
    ws, _ = home
    expected = Predictor.from_dir(trained.model_dir).predict(trained.frame)
    with registry.tracking(ws):
        loaded = mlflow.pyfunc.load_model("models:/tastyrec-dlrm/3")
    # extra columns (keys, label) are ignored by the schema; an unseen city goes to the unknown bucket
    assert np.allclose(np.asarray(loaded.predict(trained.frame)), expected)
    assert isinstance(loaded.unwrap_python_model(), pyfunc.TastyrecModel)

    registry.clear_cache()
    predictor, version = registry.load_predictor(ws)  # the champion: version 3
    assert version == 3 and np.allclose(predictor.predict(trained.frame), expected)
    again, _ = registry.load_predictor(ws, "champion")
    assert again is predictor  # cached per (home, version), not reloaded
    by_number, version = registry.load_predictor(ws, 2)
    assert version == 2 and by_number is not predictor
    assert np.allclose(by_number.predict(trained.frame), expected)


def test_champion_gate(home) -> None:
    ws, (first, worse, better) = home
    assert first.promoted and first.previous_champion is None
    assert first.decision == "version 1 (ndcg@10 0.4000) is the first champion: promoted"
    assert not worse.promoted and worse.previous_champion == 1
    assert worse.decision == (
        "version 2 (ndcg@10 0.3000) does not beat champion version 1 (0.4000): champion stays version 1")
    assert better.promoted and better.previous_champion == 1
    assert better.decision == "version 3 (ndcg@10 0.4500) beats champion version 1 (0.4000): promoted"

    versions = registry.list_versions(ws)
    assert [v["version"] for v in versions] == [3, 2, 1]  # newest first
    assert [v["aliases"] for v in versions] == [["champion"], [], []]
    assert [v["ndcg@10"] for v in versions] == [0.45, 0.30, 0.40]
    assert versions[1]["metrics"]["recall@10"] == 0.6 and versions[1]["run_id"] == worse.run_id
    assert versions[1]["description"] == "test version 2" and versions[1]["created"]


def test_the_gate_also_needs_the_best_baseline_beaten(home_copy: Workspace, trained: Trained,
                                                      tmp_path: Path) -> None:
    def register(ws: Workspace, ndcg: float, repeat: float) -> registry.RegisterResult:
        return registry.log_and_register(ws, trained.model_dir, {"run": ndcg}, trained.history,
                                         evaluation(ndcg, repeat), input_example=synthetic_frame(30, seed=4))

    # beats champion 3 (0.45) but not the repeat baseline on its own rows: the champion stays
    lost = register(home_copy, 0.50, repeat=0.55)
    assert not lost.promoted
    assert lost.decision == ("version 4 (ndcg@10 0.5000) beats champion version 3 (0.4500) but not the best "
                             "baseline, repeat (0.5500): champion stays version 3")
    assert registry.champion_version(home_copy) == 3
    won = register(home_copy, 0.50, repeat=0.49)
    assert won.promoted and registry.champion_version(home_copy) == 5
    # the first version of a fresh registry is champion anyway (the service needs a model), with a warning
    fresh = Workspace.from_env(tmp_path / "fresh")
    first = register(fresh, 0.24, repeat=0.40)
    assert first.promoted and registry.champion_version(fresh) == 1
    assert first.decision == ("version 1 (ndcg@10 0.2400) is the first champion: promoted. WARNING: it does not "
                              "beat the best baseline, repeat (0.4000); it is champion only because there is no other model")
    neither = register(fresh, 0.30, repeat=0.40)
    assert neither.decision == ("version 2 (ndcg@10 0.3000) beats champion version 1 (0.2400) but not the best "
                                "baseline, repeat (0.4000): champion stays version 1")


def test_the_gate_compares_figures_of_the_same_rows_only(trained: Trained, tmp_path: Path) -> None:
    """A champion's stored figure counts only when it comes from the same test window; otherwise
    the champion must have been scored on the new version's rows, or the champion stays."""
    ws = Workspace.from_env(tmp_path / "windows")

    def register(ndcg: float, window: str, champion: dict | None = None) -> registry.RegisterResult:
        scored = replace(evaluation(ndcg), window=window, champion=champion)
        return registry.log_and_register(ws, trained.model_dir, {"run": ndcg}, trained.history, scored,
                                         input_example=synthetic_frame(30, seed=4))

    assert register(0.30, "window A").promoted
    other = register(0.35, "window B")  # the champion's 0.30 was measured elsewhere
    assert not other.promoted and other.decision == (
        "version 2 (ndcg@10 0.3500) cannot be compared with champion version 1: its figure comes from another "
        "test window (window A; this one: window B); champion stays version 1 (`tastyrec registry promote 2` "
        "moves it by hand)")
    # scored now on the same rows, the champion does better than its stored figure: no promotion
    now = register(0.35, "window B", {"version": 1, "metrics": {"ndcg@10": 0.40}})
    assert not now.promoted and now.decision == (
        "version 3 (ndcg@10 0.3500) does not beat champion version 1 (0.4000, scored now on the same rows): "
        "champion stays version 1")
    beaten = register(0.35, "window B", {"version": 1, "metrics": {"ndcg@10": 0.33}})
    assert beaten.promoted and registry.champion_version(ws) == 4
    unscorable = register(0.50, "window B", {"version": 4, "metrics": None, "error": "KeyError: 'age'"})
    assert not unscorable.promoted and "cannot be scored on this test window (KeyError: 'age')" in unscorable.decision
    same_window = register(0.36, "window B")  # champion 4's own figure comes from window B
    assert same_window.promoted and same_window.decision == (
        "version 6 (ndcg@10 0.3600) beats champion version 4 (0.3500): promoted")
    assert [v["test_window"] for v in registry.list_versions(ws)] == ["window B"] * 5 + ["window A"]
    table = CliRunner().invoke(app, ["--home", str(ws.home), "registry", "list"], env={"COLUMNS": "250"}).output
    assert "measured on" in table and "window A" in table


def test_promote_and_rollback_move_the_alias(home_copy: Workspace) -> None:
    ws = home_copy
    assert registry.champion_version(ws) == 3
    move = registry.promote(ws, 2)
    assert (move.version, move.previous) == (2, 3) and registry.champion_version(ws) == 2
    assert registry.load_predictor(ws)[1] == 2
    assert registry.promote(ws, 2).message == "version 2 already is the champion"

    move = registry.rollback(ws)
    assert (move.version, move.previous) == (3, 2) and registry.champion_version(ws) == 3
    assert registry.rollback(ws).version == 1  # the history was 1 -> 3 -> 2
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(ws)
    assert registry.champion_version(ws) == 1

    with pytest.raises(RegistryError, match="no version 99 .versions: 1, 2, 3"):
        registry.promote(ws, 99)
    with pytest.raises(RegistryError, match="no version 99"):
        registry.load_predictor(ws, 99)
    with pytest.raises(RegistryError, match="alias 'staging'"):
        registry.load_predictor(ws, "staging")


def test_an_empty_home_gives_clear_errors_and_creates_nothing(tmp_path: Path) -> None:
    ws = Workspace.from_env(tmp_path / "fresh")
    assert registry.list_versions(ws) == [] and registry.champion_version(ws) is None
    for call in (lambda: registry.load_predictor(ws), lambda: registry.promote(ws, 1), lambda: registry.rollback(ws)):
        with pytest.raises(RegistryError, match="train a model first"):
            call()
    assert not ws.home.exists()


def test_two_homes_in_one_process_stay_apart(home, trained: Trained, tmp_path: Path) -> None:
    from mlflow.tracking._tracking_service import utils as tracking_utils

    ws, _ = home
    before = (tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_registry_uri())
    other = Workspace.from_env(tmp_path / "other")
    result = registry.log_and_register(other, trained.model_dir, {}, trained.history, evaluation(0.1),
                                       input_example=trained.frame)
    # a first version in its own registry: champion there, whatever the other home holds
    assert result.version == 1 and result.promoted
    assert [v["version"] for v in registry.list_versions(other)] == [1]
    assert [v["version"] for v in registry.list_versions(ws)] == [3, 2, 1]
    assert registry.load_predictor(other)[1] == 1 and registry.load_predictor(ws)[1] == 3
    assert other.mlflow_db.exists() and (other.mlartifacts / "models").is_dir()
    after = (tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_registry_uri())
    assert after == before  # the process-wide URIs were restored


def test_the_cli_prints_versions_moves_and_metrics(home_copy: Workspace) -> None:
    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, ["--home", str(home_copy.home), "registry", *args])
        assert result.exit_code == 0, result.output
        return " ".join(re.sub(r"[│┃━─┏┓┗┛┡┩└┘╇]", " ", result.output).split())

    assert cli("promote", "3") == "version 3 already is the champion"
    assert cli("promote", "2") == "champion moved to version 2 (was version 3)"
    assert cli("rollback") == "champion rolled back from version 2 to version 3"
    table = cli("list")
    # version 3: ndcg@10 0.45 rounded, recall@10 and auc read from the version's metrics
    assert re.search(r"3 champion dlrm time split 0\.450 0\.600 0\.710 not recorded 20\d\d-", table), table
    assert re.search(r"2 dlrm time split 0\.300 0\.600 0\.710", table), table
