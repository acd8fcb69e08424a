"""Lineage: every version records the data, feature views, cutoffs, datasets and code behind it;
rebuilding the warehouse with other data changes exactly the parts that describe the data."""

from __future__ import annotations

import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from test_service import Server

from tastyrec.config import Workspace
from tastyrec.features.build import build_features
from tastyrec.jobs import evaluate_job, train_job
from tastyrec.options import TrainOptions
from tastyrec.registry.lineage import dataset, drift, show, warehouse_fingerprint
from tastyrec.warehouse.load import RAW_TABLES, setup_synthetic


def tables_that_differ(old, new) -> set[str]:
    """The raw tables whose rows differ between two warehouse files (in any order)."""
    frames = []
    for path in (old, new):
        con = duckdb.connect(str(path), read_only=True)
        # this package's constants: identifiers cannot be parameters
        frames.append({t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in RAW_TABLES})
        con.close()
    return {t for t in RAW_TABLES if not frames[0][t].equals(frames[1][t])}


@pytest.fixture(scope="module")
def rebuilt(trained_ws, tmp_path_factory):
    """The trained workspace (version 1, seed 42), its warehouse rebuilt from seed 43 with the
    same number of customers, then features and a second version trained on it."""
    folder = tmp_path_factory.mktemp("lineage")
    ws = Workspace.from_env(shutil.copytree(trained_ws.home, folder / "home"))
    old = shutil.copy(ws.warehouse, folder / "old.duckdb")
    setup_synthetic(ws, customers=400, seed=43, force=True)
    build_features(ws)  # evaluate refuses features of another warehouse (test_pipeline)
    stale = evaluate_job(ws, 1).extra.get("warehouse_drift")
    job = train_job(ws, TrainOptions(model="dlrm", epochs=1, progress=False), seed_samples=0)
    assert job.registry.version == 2
    return ws, old, stale


def test_two_versions_lineage_differ_exactly_where_the_data_did(rebuilt):
    ws, old, _ = rebuilt
    first, second = show(ws, 1), show(ws, 2)
    a, b = first["lineage"], second["lineage"]
    changed = {t for t in RAW_TABLES if a["warehouse"]["tables"][t] != b["warehouse"]["tables"][t]}
    truth = tables_that_differ(old, ws.warehouse)
    assert changed == truth
    assert "raw_pos.order_detail" in truth and "raw_pos.country" not in truth  # neither side is vacuous
    last = [duckdb.connect(str(p), read_only=True).execute("SELECT max(order_ts) FROM raw_pos.order_header")
            .fetchone()[0].isoformat() for p in (old, ws.warehouse)]
    assert [a["warehouse"]["last_order"], b["warehouse"]["last_order"]] == last
    assert a["warehouse"]["hash"] != b["warehouse"]["hash"] == warehouse_fingerprint(ws)["hash"]
    assert (first["warehouse_fingerprint"], second["warehouse_fingerprint"]) == (a["warehouse"]["hash"], b["warehouse"]["hash"])
    # what does not describe the data is the same: feature views, windows, cutoffs, code
    assert a["features"] == b["features"] and a["features"]["views"] == {
        "customer_features": "v1", "customer_history": "v1", "item_collaborative": "v1", "menu_features": "v1",
        "purchase_features": "v1"}
    assert a["cutoffs"] == b["cutoffs"] and set(a["cutoffs"]) == {"train", "val", "test"}
    # (git_dirty may differ: other tests rewrite a tracked file, docs/app.png, between the two trainings)
    same_code = [{k: v for k, v in c["code"].items() if k != "git_dirty"} for c in (a, b)]
    assert same_code[0] == same_code[1] and a["code"]["tastyrec"]
    assert (b["code"]["git_commit"] is None) == (b["code"]["git_dirty"] is None)  # both known in a checkout
    # the training sets: the files of now are version 2's (rows, digest), version 1's digests differ
    for split, data in b["datasets"].items():
        assert data["rows"] == pq.ParquetFile(data["path"]).metadata.num_rows > 0
        assert data["digest"] == dataset(data["path"])["digest"] != a["datasets"][split]["digest"]
    # ... and MLflow holds them as the run's dataset inputs
    assert {(d["context"], d["rows"], d["digest"]) for d in second["dataset_inputs"]} == \
           {(split, d["rows"], d["digest"]) for split, d in b["datasets"].items()}


def test_evaluate_and_serve_warn_when_the_warehouse_is_not_the_champions(rebuilt):
    ws, _, stale = rebuilt
    assert "is not the one version 1 was trained on" in stale and "raw_pos.order_detail" in stale
    assert drift(ws, 2) is None and "warehouse_drift" not in evaluate_job(ws, 2).extra
    service = Server(ws.home, "--version", "1")
    assert service.stop() == 0
    assert "is not the one version 1 was trained on" in service.log.read_text()
    service = Server(ws.home, "--version", "2")
    assert service.stop() == 0
    assert "was trained on" not in service.log.read_text()
