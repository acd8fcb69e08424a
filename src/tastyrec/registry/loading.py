"""Load a registered version's Predictor (by number or alias), the seed baseline trained
with it, and what its run recorded (evaluation, loss curves). Goes through MLflow's artifact
repositories, so it keeps working when the store is a tracking server."""

from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from tastyrec.config import Workspace
from tastyrec.predictor import Predictor
from tastyrec.registry.champion import CHAMPION, alias_version, require_model, require_version
from tastyrec.registry.pyfunc import MODEL_DIR_KEY
from tastyrec.registry.tracking import MODEL_NAME, RegistryError, client, require_registry, tracking_uri
from tastyrec.registry.versions import SEED_BASELINE

LOSS_CURVES = ("train_loss", "val_loss")  # per-epoch run metrics (step = epoch)
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4
_PREDICTORS: OrderedDict[tuple[str, int, str], Predictor] = OrderedDict()  # (home, version, run_id)


def model_version(ws: Workspace, ref: str | int = CHAMPION) -> ModelVersion:
    """The registered version `ref` names: an int / digit string is a version, else an alias."""
    bound = require_registry(ws)
    require_model(bound)
    if isinstance(ref, int) or str(ref).isdigit():
        return require_version(bound, int(ref))
    version = alias_version(bound, str(ref))
    if version is None:
        raise RegistryError(f"model {MODEL_NAME!r} has no version with alias {ref!r}")
    return require_version(bound, version)


def resolve(ws: Workspace, ref: str | int = CHAMPION) -> int:
    """The version number `ref` names."""
    return int(model_version(ws, ref).version)


def load_predictor(ws: Workspace, ref: str | int = CHAMPION) -> tuple[Predictor, int]:
    """The Predictor of a registered version (default: the champion) and its version number.

    The alias is resolved on every call (a few SQLite reads), so a new champion is picked up; the
    model itself is loaded once per (home, version) and then served from an in-process cache.
    The key also holds the version's run id: a home deleted and rebuilt (new "version 1") must
    not be served the old model.
    """
    mv = model_version(ws, ref)
    version = int(mv.version)
    key = (str(ws.home), version, mv.run_id or "")
    with _CACHE_LOCK:
        if key in _PREDICTORS:
            _PREDICTORS.move_to_end(key)
            return _PREDICTORS[key], version
    predictor = _download_predictor(ws, version)
    with _CACHE_LOCK:
        _PREDICTORS[key] = predictor
        _PREDICTORS.move_to_end(key)
        while len(_PREDICTORS) > _CACHE_SIZE:
            _PREDICTORS.popitem(last=False)
    return predictor, version


def clear_cache() -> None:
    """Forget every cached predictor (tests; a service that wants to free memory)."""
    with _CACHE_LOCK:
        _PREDICTORS.clear()


def _download_predictor(ws: Workspace, version: int) -> Predictor:
    """Copy the version's model directory (located through its MLmodel file) to a temporary
    folder and load it from there; the Predictor holds everything in memory afterwards."""
    root = client(ws).get_model_version_download_uri(MODEL_NAME, str(version)).rstrip("/")
    uri = tracking_uri(ws)  # resolves the server's proxied mlflow-artifacts: URIs
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp, tracking_uri=uri)
            relative = Model.load(mlmodel).flavors["python_function"]["artifacts"][MODEL_DIR_KEY]["path"]
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{relative}",
                                                        dst_path=str(Path(tmp, "files")), tracking_uri=uri)
            return Predictor.from_dir(local)
        except (MlflowException, OSError, KeyError) as exc:
            raise RegistryError(f"version {version}'s model files cannot be read from {root}: {exc}") from None


def load_seed_baseline(ws: Workspace, version: int) -> Predictor | None:
    """The seed's DLRM trained with `version` (logged with its run), or None if it had none."""
    mv = model_version(ws, version)
    if mv.tags.get(SEED_BASELINE) != "true":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client(ws).download_artifacts(mv.run_id, SEED_BASELINE, tmp)
            return Predictor.from_dir(local)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"version {version}'s seed baseline cannot be read: {exc}") from None


def load_evaluation(ws: Workspace, ref: str | int = CHAMPION) -> dict:
    """What the version's training run recorded for people to read: {"version", "run_id",
    "evaluation" (its evaluation.json: model, baselines, oracle, ...), "history" (one dict per
    epoch: epoch, train_loss, val_loss, where logged)}."""
    mv = model_version(ws, ref)
    bound = client(ws)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = bound.download_artifacts(mv.run_id, "evaluation.json", tmp)
            evaluation = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError) as exc:
            raise RegistryError(f"version {mv.version}'s evaluation.json cannot be read: {exc}") from None
    epochs: dict[int, dict] = {}
    for name in LOSS_CURVES:
        for point in bound.get_metric_history(mv.run_id, name):
            epochs.setdefault(int(point.step), {"epoch": int(point.step)})[name] = point.value
    return {"version": int(mv.version), "run_id": mv.run_id, "evaluation": evaluation,
            "history": [epochs[e] for e in sorted(epochs)]}
