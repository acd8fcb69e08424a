"""Lineage: which data, feature views and code made a registered version (the seed's Snowflake ML
lineage, table -> feature view -> dataset -> model), and whether the warehouse still matches.

Recorded with every version's run (`record`):

    lineage.json        warehouse   per raw table its rows and a checksum of its contents, the
                                    last order time, and a hash of all of these (the fingerprint)
                        features    the Feast feature views and their version tags, the windows
                        cutoffs     the snapshot cutoffs of train / validation / test
                        datasets    each split of the training set: path, rows, digest
                        code        the tastyrec version, the git commit when run from a checkout
    dataset inputs      the same splits through `mlflow.log_input` (context = the split)
    version tag         warehouse_fingerprint: what `drift` compares with the warehouse of now
"""

from __future__ import annotations

import json
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq

from tastyrec.config import Workspace
from tastyrec.warehouse.fingerprint import digest as _digest, warehouse_fingerprint  # noqa: F401 - re-exported

LINEAGE_FILE = "lineage.json"  # run artifact
FINGERPRINT_TAG = "warehouse_fingerprint"  # version tag: the warehouse hash


def dataset(path: str | Path) -> dict[str, Any]:
    """A Parquet file's path, rows and digest. The digest is taken from the footer (schema, row
    groups, per-column statistics and sizes): any change of the rows changes it, and it costs no
    pass over the data."""
    meta = pq.ParquetFile(path).metadata
    return {"path": str(path), "rows": meta.num_rows, "digest": _digest(meta.to_dict())}


def code_version() -> dict[str, Any]:
    """The installed tastyrec version, and the git commit of its source when it runs from a
    checkout (dirty: uncommitted changes); None where there is no git or no checkout."""
    source = Path(__file__).resolve().parents[1]
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"tastyrec": metadata.version("tastyrec"), "git_commit": commit, "git_dirty": dirty}


def collect(ws: Workspace, training_set, evaluation_test: str | None = None) -> dict[str, Any]:
    """The lineage of a model trained on `training_set` (features.training.TrainingSet) and
    evaluated on `evaluation_test` (recorded as the split "evaluation" when it is another file)."""
    from tastyrec.features.build import built_features, feature_store

    features = built_features(ws)
    views = {v.name: v.tags.get("version") for v in feature_store(ws).list_feature_views()}
    paths = dict(training_set.paths)
    if evaluation_test and Path(evaluation_test) != Path(paths.get("test", "")):
        paths["evaluation"] = evaluation_test
    datasets = {split: dataset(path) for split, path in paths.items()}
    return {"warehouse": warehouse_fingerprint(ws),
            "features": {"views": dict(sorted(views.items())), "windows": features.windows,
                         "online_store": features.online_store},
            "cutoffs": training_set.cutoffs, "training_split": training_set.mode, "datasets": datasets,
            "code": code_version()}


def record(lineage: dict[str, Any]) -> None:
    """Log the lineage into the active MLflow run: lineage.json and one dataset input per split."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    mlflow.log_dict(lineage, LINEAGE_FILE)
    mode = lineage["training_split"]
    for split, data in lineage["datasets"].items():
        with warnings.catch_warnings():  # MLflow registers its local source twice ("" and file://) and says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(Path(data["path"]).as_uri())
        dataset = MetaDataset(source, name=f"{mode}/{split}", digest=data["digest"])
        mlflow.log_input(dataset, context=split, tags={"rows": str(data["rows"])})


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two warehouse fingerprints, in words (tables, then the last order)."""
    out = []
    for table, was in old.get("tables", {}).items():
        now = new.get("tables", {}).get(table)
        if now is None:
            out.append(f"{table} is gone")
        elif now["rows"] != was["rows"]:
            out.append(f"{table} {was['rows']:,} -> {now['rows']:,} rows")
        elif now["checksum"] != was["checksum"]:
            out.append(f"{table} changed ({now['rows']:,} rows)")
    if old.get("last_order") != new.get("last_order"):
        out.append(f"last order {old.get('last_order')} -> {new.get('last_order')}")
    return out


def show(ws: Workspace, ref: str | int) -> dict[str, Any]:
    """`registry show`: the version as `list_versions` gives it, its lineage (None for versions
    registered before lineage was recorded) and its dataset inputs as MLflow holds them."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from tastyrec.registry.loading import model_version
    from tastyrec.registry.tracking import client
    from tastyrec.registry.versions import list_versions

    mv = model_version(ws, ref)
    bound = client(ws)
    listed = next(v for v in list_versions(ws) if v["version"] == int(mv.version))
    inputs = []
    for given in bound.get_run(mv.run_id).inputs.dataset_inputs:
        tags = {t.key: t.value for t in given.tags}
        inputs.append({"name": given.dataset.name, "context": tags.get("mlflow.data.context"),
                       "rows": int(tags["rows"]) if "rows" in tags else None, "digest": given.dataset.digest,
                       "source": json.loads(given.dataset.source).get("uri")})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lineage = json.loads(Path(bound.download_artifacts(mv.run_id, LINEAGE_FILE, tmp)).read_text())
        except (MlflowException, OSError):
            lineage = None
    return listed | {"lineage": lineage, "dataset_inputs": inputs}


def drift(ws: Workspace, ref: str | int = "champion") -> str | None:
    """A warning when the warehouse of now is not the one version `ref` was trained on (None when
    it is, or when the version recorded no fingerprint)."""
    from tastyrec.registry.loading import model_version

    mv = model_version(ws, ref)
    if (recorded := mv.tags.get(FINGERPRINT_TAG)) is None:
        return None
    now = warehouse_fingerprint(ws)
    if recorded == now["hash"]:
        return None
    lineage = show(ws, int(mv.version))["lineage"] or {}
    what = changes(lineage.get("warehouse", {}), now) or ["its fingerprint differs"]
    return (f"the warehouse at {ws.warehouse} is not the one version {mv.version} was trained on "
            f"({'; '.join(what)}): rebuild the features and train again (`tastyrec features`, `tastyrec train`)")
