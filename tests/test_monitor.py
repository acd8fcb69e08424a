"""`tastyrec monitor`: the champion on two simulated windows after its training data, with the
figures `features --until` + `evaluate` give by hand; PSI against a hand computation; a drift
warning for an input changed on purpose; the message before any window is complete; the
series on the app's Model page."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.features.build import build_features
from tastyrec.monitor import (EXPERIMENT, PSI_EPSILON, aside, categorical_counts, decile_edges, drift_warnings,
                              input_drift, latest_report, monitor, numeric_counts, psi)
from tastyrec.registry.tracking import client, json_safe
from tastyrec.warehouse.ingest import ingest_csv
from tastyrec.warehouse.load import connect
from tastyrec.warehouse.simulate import simulate

W = 91  # trained_ws: three years of data, 91-day windows
E0 = date(2023, 1, 1)  # the day after trained_ws's last order: where its champion's training data ends


def copy(ws: Workspace, to: Path) -> Workspace:
    return Workspace.from_env(shutil.copytree(ws.home, to))


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def app_engines(monkeypatch):
    """The app's in-process engines a test opens, closed after it: their precomputing threads are
    joined (one still in torch when pytest exits aborts the process)."""
    from tastyrec.app import backend

    opened = []

    class Closing(backend.LocalEngine):
        def __init__(self, ws: Workspace):
            super().__init__(ws)
            opened.append(self)

    monkeypatch.setattr(backend, "LocalEngine", Closing)
    yield
    backend._backend.clear()
    for local in opened:
        local.engine.close()


@pytest.fixture(scope="module")
def watched(trained_ws, tmp_path_factory):
    """A copy of trained_ws with two windows of simulated orders ingested after the champion's
    data, its serving features moved to the new end, and monitor run once. Returns (ws, result,
    the serving pointer and feature runs before monitor ran)."""
    ws = copy(trained_ws, tmp_path_factory.mktemp("monitor") / "home")
    delivery = simulate(ws, days=2 * W, lift=0)
    ingest_csv(ws, Path(delivery.out))
    build_features(ws, window_days=W)
    before = ws.features_pointer.read_text(), sorted(p.name for p in ws.feature_runs.iterdir())
    return ws, monitor(ws), before


def test_two_windows_with_the_figures_of_evaluate_by_hand(watched, tmp_path):
    ws, result, (pointer, runs) = watched
    assert result.champion["trained_until"] == E0.isoformat() and result.champion["window_days"] == W
    ends = [E0 + timedelta(days=W), E0 + timedelta(days=2 * W)]
    assert [(w.first_day, w.until) for w in result.windows] == [
        (E0.isoformat(), ends[0].isoformat()), (ends[0].isoformat(), ends[1].isoformat())]
    assert result.cache["computed"] == [1, 2] and result.message is None
    # by hand: window 1 = `features --until` + `evaluate` on a copy; window 2 ends where the data
    # ends, so it is `evaluate` on the home's own features
    by_hand = copy(ws, tmp_path / "by-hand")
    cli("--home", str(by_hand.home), "features", "--until", ends[0].isoformat(), "--window-days", str(W))
    evaluations = [json.loads(cli("--home", str(home), "evaluate", "--json")) for home in (by_hand.home, ws.home)]
    for window, evaluation in zip(result.windows, evaluations):
        assert window.champion == evaluation["model_name"]
        assert window.methods == json_safe({evaluation["model_name"]: evaluation["model"], **evaluation["baselines"]})
        assert (window.rows, window.customers, window.window) == (evaluation["rows"], evaluation["customers"],
                                                                 evaluation["window"])
        assert window.window.startswith(f"{window.first_day} + {W} days")  # the test window is this window
    # the home's serving features never moved, and a window keeps only its figures
    assert ws.features_pointer.read_text() == pointer
    assert sorted(p.name for p in ws.feature_runs.iterdir()) == runs
    assert not (ws.home / "monitor" / ends[0].isoformat() / "feature_runs").exists()
    # every input has a PSI; the warnings name the inputs past 0.25
    inputs = result.drift["inputs"]
    assert all(d["psi"] is not None and d["psi"] >= 0 for d in inputs)
    major = [d["feature"] for d in inputs if d["psi"] > 0.25]
    assert all(d["level"] == "major" for d in inputs if d["feature"] in major)
    assert bool(major) == any(w.startswith("major drift (PSI > 0.25)") and all(f in w for f in major)
                              for w in result.warnings)


def test_a_second_monitor_reuses_the_windows_and_logs_a_series(watched):
    ws, first, _ = watched
    reference_runs = sorted((ws.home / "monitor" / E0.isoformat() / "feature_runs").iterdir())
    shown = cli("--home", str(ws.home), "monitor")
    assert "NDCG@10 per window" in shown and "(cached)" in shown and "windows 1, 2 reused from" in shown
    assert "input drift: training snapshot 2023-01-01" in shown
    assert sorted((ws.home / "monitor" / E0.isoformat() / "feature_runs").iterdir()) == reference_runs  # not rebuilt
    report = latest_report(ws)
    assert report["cache"]["reused"] == [1, 2] and report["cache"]["computed"] == []
    assert report["windows"] == json_safe([{**w.__dict__, "cached": True} for w in first.windows])
    # MLflow: a run per call, the champion's NDCG@10 per window (step = window index)
    bound = client(ws)
    experiment = bound.get_experiment_by_name(EXPERIMENT).experiment_id
    assert len(bound.search_runs([experiment])) == 2
    history = bound.get_metric_history(report["mlflow"]["run_id"], "champion.ndcg_at_10")
    assert [(p.step, p.value) for p in sorted(history, key=lambda p: p.step)] == [
        (w.index, w.figure(w.champion, "ndcg@10")) for w in first.windows]


def test_psi_against_a_hand_computation():
    # ten distinct values: each decile bin holds one of them (a share of 0.1)
    reference, current = np.arange(1.0, 11.0), np.array([1.0] * 5 + [10.0] * 5)
    edges = decile_edges(reference)
    assert numeric_counts(reference, edges).tolist() == [1] * 10
    assert numeric_counts(current, edges).tolist() == [5] + [0] * 8 + [5]
    by_hand = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (PSI_EPSILON - 0.1) * math.log(PSI_EPSILON / 0.1)
    assert psi(numeric_counts(reference, edges), numeric_counts(current, edges)) == pytest.approx(by_hand)
    # categories: the reference's, and one bin for a value it never had
    ref, cur = categorical_counts(Counter(a=6, b=4), Counter(a=5, b=3, c=2))
    assert (ref.tolist(), cur.tolist()) == ([6, 4, 0], [5, 3, 2])
    by_hand = ((0.5 - 0.6) * math.log(0.5 / 0.6) + (0.3 - 0.4) * math.log(0.3 / 0.4)
               + (0.2 - PSI_EPSILON) * math.log(0.2 / PSI_EPSILON))
    assert psi(ref, cur) == pytest.approx(by_hand)
    assert psi(ref, ref) == 0.0


def test_an_input_changed_on_purpose_is_a_drift_warning(watched, tmp_path):
    ws, result, _ = watched
    changed = copy(ws, tmp_path / "changed")
    con = connect(changed.warehouse)
    try:  # every customer 30 years older: the input "age" moves, nothing else a customer has
        con.execute("UPDATE raw_customer.customer_loyalty SET birthday_date = birthday_date - INTERVAL 30 YEAR")
    finally:
        con.close()
    build_features(changed, window_days=W)
    reference = aside(ws, E0)  # the training snapshot monitor built
    inputs = {d.feature: d for d in input_drift(reference, changed)}
    before = {d["feature"]: d for d in result.drift["inputs"]}
    assert inputs["age"].level == "major" and before["age"]["level"] == "no drift"
    assert inputs["gender"].psi == before["gender"]["psi"]
    warning = drift_warnings(list(inputs.values()), E0.isoformat(), "2023-07-02")[0]
    assert warning.startswith("major drift (PSI > 0.25) between the training snapshot (2023-01-01) and the serving "
                              "snapshot (2023-07-02): ") and f"age ({inputs['age'].psi:.3f})" in warning


def test_no_complete_window_yet_and_the_model_page_before_and_after(trained_ws, tmp_path, monkeypatch, app_engines):
    from test_app import app_test

    ws = copy(trained_ws, tmp_path / "home")
    at = app_test(ws, monkeypatch)
    at.switch_page("pages/model.py").run()
    assert any("has not been monitored in this workspace yet: `tastyrec monitor`" in i.value for i in at.info)
    result = json.loads(cli("--home", str(ws.home), "monitor", "--json"))
    assert result["windows"] == [] and result["message"] == (
        "no complete window after the champion's training data yet: orders run to 2022-12-31, "
        "the first window ends 2023-04-01")
    # the training snapshot is the serving one (nothing came since): no drift, nothing built aside
    assert {d["level"] for d in result["drift"]["inputs"]} == {"no drift"}
    assert result["drift"]["reference"]["features"] == str(ws.feature_repo)
    at.run()
    assert any(i.value == result["message"] for i in at.info)


def test_the_model_page_shows_the_series(watched, monkeypatch, app_engines):
    from test_app import app_test

    ws, _, _ = watched
    report = latest_report(ws)
    at = app_test(ws, monkeypatch)
    at.switch_page("pages/model.py").run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 3  # the loss curves, then NDCG@10 and new-item NDCG@10 per window
    table = at.dataframe[1].value  # after the test metrics: the windows
    champion = report["windows"][0]["champion"]
    assert table["window"].tolist() == [f"{w['index']}: {w['first_day']} .. {w['last_day']}" for w in report["windows"]]
    assert table[f"{champion} (champion) NDCG@10"].tolist() == [
        f"{w['methods'][champion]['ndcg@10']:.3f}" for w in report["windows"]]
    drift = at.dataframe[2].value
    assert drift["input"].tolist() == [d["feature"] for d in report["drift"]["inputs"]]
    assert [w.value for w in at.warning] == report["warnings"]
