"""Register a trained model as a new version (one MLflow run, then the champion gate) and list
the versions.

One call of `log_and_register` makes one MLflow run holding

    params                      the training params (flattened; full copy in params.json)
    metrics                     per-epoch curves (train_loss, val_loss, ... with step = epoch) and
                                the test metrics of the evaluation's model as test_<name>, with "@"
                                written "_at_" (MLflow names may not contain "@"): test_ndcg_at_10
    artifacts/evaluation.json   the whole Evaluation (model, baselines, oracle, ...)
    artifacts/params.json       the params as given
    artifacts/plots/loss_curves.png, artifacts/plots/ranking_vs_baselines.png
    artifacts/seed_baseline/    the seed's DLRM trained with this version, when there is one
    artifacts/lineage.json      warehouse fingerprint, feature views, cutoffs, datasets, code
                                (registry.lineage; also the training set as dataset inputs)
    a logged pyfunc model "model" (TastyrecModel): MLmodel with signature + input example,
                                artifacts/model_dir/ = preprocess.json + model.pt

and registers that model as a new version of "tastyrec-dlrm", tagged with the test metrics.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from tastyrec.config import Workspace
from tastyrec.evaluate import GATE_METRIC, Evaluation, loss_figure, ranking_figure
from tastyrec.metrics import finite
from tastyrec.predictor import Predictor
from tastyrec.registry import pyfunc
from tastyrec.registry.champion import WINDOW_TAG, fmt, gate
from tastyrec.registry.lineage import FINGERPRINT_TAG, record
from tastyrec.registry.tracking import (MODEL_NAME, RegistryError, client, experiment_id, flat_metrics,
                                        flat_params, has_registry, json_safe, metric_tag, mlflow_name, not_found,
                                        tag_to_metric, tracking, without_mlflow_notices)

PYFUNC_NAME = "model"  # name of the logged model inside the run
SEED_BASELINE = "seed_baseline"  # run artifact folder (and version tag) of the seed's DLRM
DECISION_TAG = "gate_decision"
KIND_TAG = "model_kind"
SPLIT_TAG = "training_split"

REGISTERED_DESCRIPTION = (
    "tastyrec DLRM: probability that a loyalty customer buys a menu item in the next window, "
    "with its fitted preprocessing (preprocess.json) and weights (model.pt). Input: one row per "
    "(customer, candidate item) with the training-set feature columns. The alias 'champion' is "
    "the version the service and app use; it moves only when a new version beats it on the test "
    "NDCG@10 (or by hand with promote / rollback)."
)


@dataclass(frozen=True)
class RegisterResult:
    """What `log_and_register` did: the new version, its run, and the champion gate's verdict."""

    version: int
    run_id: str
    promoted: bool
    decision: str
    previous_champion: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log_run(model_dir: Path, predictor: Predictor, params: dict[str, Any], history: list[dict[str, Any]],
             evaluation: Evaluation, example: pd.DataFrame, seed_model_dir: Path | None,
             lineage: dict[str, Any] | None, tmp: str) -> str:
    """Log everything of one training run into the active run; returns the pyfunc's model URI."""
    mlflow.set_tags({"tastyrec.model_kind": predictor.kind, "tastyrec.model_dir": str(model_dir)})
    if lineage is not None:
        record(lineage)
    mlflow.log_params(flat_params(params))
    for entry in history:
        curves = {mlflow_name(k): v for k, v in flat_metrics(entry).items() if k != "epoch"}
        mlflow.log_metrics(curves, step=int(entry.get("epoch", 0)))
    mlflow.log_metrics({metric_tag(k): v for k, v in flat_metrics(evaluation.model).items()})
    mlflow.log_dict(json_safe(evaluation.to_dict()), "evaluation.json")
    mlflow.log_dict(json_safe(params), "params.json")
    plots = Path(tmp, "plots")
    plots.mkdir()
    loss_figure(history).savefig(plots / "loss_curves.png")
    ranking_figure(evaluation).savefig(plots / "ranking_vs_baselines.png")
    mlflow.log_artifacts(str(plots), "plots")
    if seed_model_dir is not None:
        mlflow.log_artifacts(str(seed_model_dir), SEED_BASELINE)
    # A copy named model_dir, so the logged layout is artifacts/model_dir/ whatever the source
    # folder is called.
    staged = shutil.copytree(model_dir, Path(tmp, pyfunc.MODEL_DIR_KEY))
    info = mlflow.pyfunc.log_model(
        name=PYFUNC_NAME, python_model=pyfunc.TastyrecModel(), artifacts={pyfunc.MODEL_DIR_KEY: str(staged)},
        signature=pyfunc.signature(predictor, example, predictor.predict(example)),
        input_example=example, pip_requirements=pyfunc.pip_requirements(),
    )
    return info.model_uri


def log_and_register(
    ws: Workspace,
    model_dir: str | Path,
    params: dict[str, Any],
    history: list[dict[str, Any]],
    evaluation: Evaluation,
    input_example: pd.DataFrame,
    description: str = "",
    seed_model_dir: str | Path | None = None,
    split: str = "time",
    lineage: dict[str, Any] | None = None,
) -> RegisterResult:
    """Log one training run (see the module docstring), register it as a new version of
    "tastyrec-dlrm" and apply the champion gate on `evaluation`'s test NDCG@10.

    `history` holds one dict per epoch with "epoch" and numeric entries such as train_loss /
    val_loss. `split` is the split the model was trained on (recorded on the version).
    `lineage`: registry.lineage.collect's record of the data and code behind the model.
    """
    model_dir = Path(model_dir)
    try:
        predictor = Predictor.from_dir(model_dir)
    except FileNotFoundError as exc:
        raise RegistryError(f"{model_dir} is not a model directory ({exc.filename} missing)") from None
    example = pyfunc.example(predictor, input_example)
    test_metrics = flat_metrics(evaluation.model)
    gate_value = test_metrics.get(GATE_METRIC)

    with tracking(ws) as bound, tempfile.TemporaryDirectory() as tmp:
        with mlflow.start_run(experiment_id=experiment_id(bound, ws)) as run:
            run_id = run.info.run_id
            seed_dir = Path(seed_model_dir) if seed_model_dir else None
            model_uri = _log_run(model_dir, predictor, params, history, evaluation, example, seed_dir, lineage, tmp)
            # Tagged at creation: no version ever exists without the metric the gate reads.
            tags = {metric_tag(k): repr(v) for k, v in test_metrics.items()}
            tags |= {KIND_TAG: predictor.kind, SPLIT_TAG: split, SEED_BASELINE: str(seed_dir is not None).lower()}
            if lineage is not None:
                tags[FINGERPRINT_TAG] = lineage["warehouse"]["hash"]
            if evaluation.window is not None:
                tags[WINDOW_TAG] = evaluation.window
            with without_mlflow_notices():  # "Successfully registered model ...", "Created version ..."
                version = int(mlflow.register_model(model_uri, MODEL_NAME, tags=tags).version)

        if not bound.get_registered_model(MODEL_NAME).description:
            bound.update_registered_model(MODEL_NAME, description=REGISTERED_DESCRIPTION)
        text = description or (f"{predictor.kind} from run {run_id}; test ndcg@10 {fmt(gate_value)}, "
                               f"recall@10 {fmt(test_metrics.get('recall@10'))}")
        bound.update_model_version(MODEL_NAME, str(version), description=text)
        best = evaluation.best_baseline
        baseline = (best, flat_metrics(evaluation.baselines[best]).get(GATE_METRIC)) if best else None
        promoted, decision, champion = gate(bound, version, gate_value, baseline, evaluation.window,
                                            evaluation.champion)
        bound.set_model_version_tag(MODEL_NAME, str(version), DECISION_TAG, decision)
        bound.set_tag(run_id, DECISION_TAG, decision)
    return RegisterResult(version, run_id, promoted, decision, champion)


def list_versions(ws: Workspace) -> list[dict[str, Any]]:
    """Every registered version, newest first: version, created (UTC ISO), ndcg@10, metrics (all
    test metrics from the version tags), aliases, run_id, description, model_kind,
    training_split, gate_decision, warehouse_fingerprint, test_window (where the metrics come from)."""
    if not has_registry(ws):
        return []
    bound = client(ws)
    try:
        # search results leave aliases out; the registered model has them all (alias -> version)
        alias_map = bound.get_registered_model(MODEL_NAME).aliases or {}
    except MlflowException as exc:
        if not_found(exc):
            return []
        raise
    out = []
    for mv in bound.search_model_versions(f"name='{MODEL_NAME}'"):
        metrics = {name: finite(value) for tag, value in mv.tags.items() if (name := tag_to_metric(tag))}
        out.append({
            "version": int(mv.version),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).isoformat(),
            GATE_METRIC: metrics.get(GATE_METRIC),
            "metrics": metrics,
            "aliases": sorted(a for a, v in alias_map.items() if str(v) == str(mv.version)),
            "run_id": mv.run_id,
            "description": mv.description or "",
            KIND_TAG: mv.tags.get(KIND_TAG),
            SPLIT_TAG: mv.tags.get(SPLIT_TAG),
            DECISION_TAG: mv.tags.get(DECISION_TAG),
            FINGERPRINT_TAG: mv.tags.get(FINGERPRINT_TAG),
            WINDOW_TAG: mv.tags.get(WINDOW_TAG),
        })
    return sorted(out, key=lambda d: d["version"], reverse=True)

