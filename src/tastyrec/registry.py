"""MLflow tracking and model registry: log a training run, register it, gate the champion, load it.

Everything lives in the workspace: the tracking + registry store is `sqlite:///<home>/mlflow.db`,
artifacts go to `<home>/mlartifacts` (experiment "tastyrec"). Nothing here talks to a network.

One call of `log_and_register` makes one MLflow run holding

    params                      the training params (flattened; full copy in params.json)
    metrics                     per-epoch curves (train_loss, val_loss, ... with step = epoch) and
                                the test metrics of evaluation["model"] as test_<name>, with "@"
                                written "_at_" (MLflow names may not contain "@"): test_ndcg_at_10
    artifacts/evaluation.json   the whole evaluation dict (model, baselines, oracle, ...)
    artifacts/params.json       the params as given
    artifacts/plots/loss_curves.png, artifacts/plots/ranking_vs_baselines.png
    a logged pyfunc model "model" (TastyrecModel): MLmodel with signature + input example,
                                artifacts/model_dir/ = preprocess.json + model.pt

and registers that model as a new version of "tastyrec-dlrm", tagged with the test metrics.
The alias "champion" moves to the new version only when its test NDCG@10 is strictly greater
than the champion's; `promote` and `rollback` move it by hand. Every move is recorded in the
registered-model tag "champion_history" (a JSON list of versions, oldest first), which is what
`rollback` walks back along.

MLflow's fluent API (start_run, log_model, register_model) reads process-wide URIs, so `tracking`
points them at one workspace for the duration of a `with` block and restores them afterwards
(under a lock): several workspaces can be used in one process. Reads (list, promote, rollback,
load) use an `MlflowClient` with explicit URIs and touch no global state.
"""

from __future__ import annotations

import json
import math
import os

# MLflow starts its telemetry client when it is imported, so the switches must be in the
# environment first. Recommendations are local-first: MLflow must never reach for the network.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"  # the name older MLflow versions read
os.environ["DO_NOT_TRACK"] = "true"

import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model, ModelSignature, infer_signature  # noqa: E402
from mlflow.pyfunc import PythonModel, PythonModelContext  # noqa: E402
from mlflow.telemetry import set_telemetry_client  # noqa: E402
from mlflow.types import ColSpec, DataType, Schema, TensorSpec  # noqa: E402
from mlflow.types.schema import Array  # noqa: E402

from tastyrec.config import Workspace  # noqa: E402
from tastyrec.predictor import Predictor  # noqa: E402

# If something imported MLflow before this module, its telemetry client may exist already; it
# re-reads the switches here and drops itself (it sends nothing before its first record).
set_telemetry_client()

MODEL_NAME = "tastyrec-dlrm"
EXPERIMENT = "tastyrec"
CHAMPION = "champion"
GATE_METRIC = "ndcg@10"  # test-set metric the champion gate compares
HISTORY_TAG = "champion_history"
DECISION_TAG = "gate_decision"
KIND_TAG = "model_kind"
METRIC_PREFIX = "test_"  # run metrics and version tags: test_<name>, e.g. test_ndcg_at_10
PYFUNC_NAME = "model"  # name of the logged model inside the run
MODEL_DIR_KEY = "model_dir"  # the pyfunc artifact holding preprocess.json + model.pt
HISTORY_KEEP = 100  # champion moves kept in the tag (a tag value is a bounded string)
PARAM_VALUE_MAX = 6000  # MLflow's limit on one param value
EXAMPLE_ROWS = 5

REGISTERED_DESCRIPTION = (
    "tastyrec DLRM: probability that a loyalty customer buys a menu item in the next window, "
    "with its fitted preprocessing (preprocess.json) and weights (model.pt). Input: one row per "
    "(customer, candidate item) with the training-set feature columns. The alias 'champion' is "
    "the version the service and app use; it moves only when a new version beats it on the test "
    "NDCG@10 (or by hand with promote / rollback)."
)

_URI_LOCK = threading.RLock()  # MLflow's process-wide tracking / registry URIs
_MOVE_LOCK = threading.RLock()  # champion moves within this process (gate, promote, rollback)
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4
_PREDICTORS: OrderedDict[tuple[str, int, str], Predictor] = OrderedDict()  # (home, version, run_id)


class RegistryError(Exception):
    """A registry request that cannot be met (unknown version or alias, no champion, ...)."""


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


@dataclass(frozen=True)
class ChampionMove:
    """A hand-made move of the champion alias (`promote`, `rollback`)."""

    version: int
    previous: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# where MLflow writes
# ---------------------------------------------------------------------------------------------
def tracking_uri(ws: Workspace) -> str:
    """The tracking and registry URI of a workspace: its SQLite file."""
    return f"sqlite:///{ws.mlflow_db}"


def _client(ws: Workspace) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(ws), registry_uri=tracking_uri(ws))


def _has_registry(ws: Workspace) -> bool:
    return ws.mlflow_db.exists()


def _experiment_id(client: MlflowClient, ws: Workspace) -> str:
    """The "tastyrec" experiment, created with its artifacts under <home>/mlartifacts."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":  # deleted in the UI: runs could not be logged to it
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    ws.mlartifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(EXPERIMENT, artifact_location=ws.mlartifacts.as_uri())


@contextmanager
def tracking(ws: Workspace) -> Iterator[MlflowClient]:
    """Point MLflow (fluent API included) at the workspace's store for the `with` block.

    Yields a client bound to the workspace; ensures the home, the artifact folder and the
    "tastyrec" experiment exist. The process-wide tracking / registry URIs (and the environment
    variables MLflow mirrors them into) are restored on exit, so other workspaces and other
    MLflow users in the same process are unaffected.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    ws.ensure()
    uri = tracking_uri(ws)
    with _URI_LOCK:
        saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            client = _client(ws)
            _experiment_id(client, ws)
            yield client
        finally:
            # None is what MLflow's own _use_tracking_uri restores: back to default resolution.
            mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]
            registry_utils._registry_uri = saved_registry
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# ---------------------------------------------------------------------------------------------
# the pyfunc
# ---------------------------------------------------------------------------------------------
class TastyrecModel(PythonModel):
    """MLflow pyfunc around `Predictor`: the PyTorch flavour cannot take the mixed string /
    float / list-of-strings columns, and the preprocessing must travel with the weights.

    Logged with artifacts={"model_dir": <model directory>}; predict returns P(purchase) per row.
    Loading needs the `tastyrec` package importable (the class is pickled by reference).
    """

    def __init__(self) -> None:
        self.predictor: Predictor | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.predictor = Predictor.from_dir(context.artifacts[MODEL_DIR_KEY])

    # The pd.DataFrame hint tells MLflow not to infer a schema from the hint (the logged
    # signature is the contract); inputs still go through the signature's schema enforcement.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        if self.predictor is None:  # called without load_context (e.g. a bare instance)
            self.load_context(context)
        assert self.predictor is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predictor.predict(frame)  # (N,) float32


# ---------------------------------------------------------------------------------------------
# helpers: names, numbers, params
# ---------------------------------------------------------------------------------------------
def mlflow_name(name: str) -> str:
    """A metric / tag name MLflow accepts: "@" becomes "_at_" (ndcg@10 -> ndcg_at_10)."""
    out = name.replace("@", "_at_")
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in out)


def _metric_tag(name: str) -> str:
    return METRIC_PREFIX + mlflow_name(name)


def _tag_to_metric(tag: str) -> str | None:
    """Inverse of `_metric_tag` for the tags this module writes; None for other tags."""
    if not tag.startswith(METRIC_PREFIX):
        return None
    return tag[len(METRIC_PREFIX):].replace("_at_", "@")


def _finite(value: Any) -> float | None:
    """value as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _flat_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The numeric, finite entries of a flat metrics dict (None / NaN are skipped)."""
    out = {}
    for key, value in (metrics or {}).items():
        if (v := _finite(value)) is not None:
            out[key] = v
    return out


def _json_safe(obj: Any) -> Any:
    """obj with NaN / inf as None and numpy scalars / arrays as Python values (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts flattened to dotted keys; values as strings within MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = mlflow_name(f"{prefix}{key}")
        if isinstance(value, dict) and value:
            out |= _flat_params(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(_json_safe(value))
            out[name] = text if len(text) <= PARAM_VALUE_MAX else text[: PARAM_VALUE_MAX - 3] + "..."
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's object API on an Agg canvas: no pyplot state, no global backend switch)
# ---------------------------------------------------------------------------------------------
def loss_figure(history: list[dict[str, Any]]) -> Figure:
    """Train / validation loss per epoch."""
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h if k.endswith("loss")})
    for key in keys:
        values = [_finite(h.get(key)) for h in history]
        ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE loss")
    ax.set_title("Loss curves")
    if keys:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ranking_figure(evaluation: dict[str, Any], metrics: tuple[str, ...] = ("ndcg@10", "recall@10")) -> Figure:
    """Bars of `metrics` for the model, each baseline and the oracle (when there is one)."""
    methods: list[tuple[str, dict[str, Any]]] = [(MODEL_NAME, evaluation.get("model") or {})]
    methods += [(name, m or {}) for name, m in (evaluation.get("baselines") or {}).items()]
    if evaluation.get("oracle"):
        methods.append(("oracle", evaluation["oracle"]))
    fig = Figure(figsize=(max(6.0, 1.3 * len(methods) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        values = [_finite(m.get(metric)) for _, m in methods]
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (j - (len(metrics) - 1) / 2) * width, heights, width, label=metric)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, [name for name, _ in methods], rotation=20, ha="right")
    ax.set_ylabel("test metric")
    ax.set_title("Ranking quality: model vs baselines vs oracle")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# signature and input example
# ---------------------------------------------------------------------------------------------
def _example(predictor: Predictor, input_example: pd.DataFrame) -> pd.DataFrame:
    """A few rows of the feature columns the model reads, list cells as plain lists of str."""
    cols = [*predictor.preprocessor.sparse, *predictor.preprocessor.dense, *predictor.preprocessor.multi_hot]
    missing = [c for c in cols if c not in input_example.columns]
    if missing:
        raise RegistryError(f"input_example lacks the model's feature columns {missing}")
    example = input_example[cols].head(EXAMPLE_ROWS).reset_index(drop=True).copy()
    for name in predictor.preprocessor.multi_hot:
        example[name] = [[] if v is None else [str(x) for x in v] for v in example[name]]
    return example


def _signature(predictor: Predictor, example: pd.DataFrame, predictions: np.ndarray) -> ModelSignature:
    """Inferred from the example; every column optional (the preprocessor maps missing values to
    its unknown bucket / 0), so serving rows with a None are not refused by schema enforcement."""
    try:
        inferred = infer_signature(example, predictions)
        specs: list[ColSpec | TensorSpec] = [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
        inputs = Schema(specs)
        return ModelSignature(inputs=inputs, outputs=inferred.outputs)
    except Exception:  # older MLflow without list-column inference: spell the schema out
        pre = predictor.preprocessor
        cols: list[ColSpec | TensorSpec] = [ColSpec(DataType.string, c, required=False) for c in pre.sparse]
        cols += [ColSpec(DataType.double, c, required=False) for c in pre.dense]
        cols += [ColSpec(Array(DataType.string), c, required=False) for c in pre.multi_hot]
        return ModelSignature(inputs=Schema(cols), outputs=Schema([ColSpec(DataType.float)]))


def _pip_requirements() -> list[str]:
    """Pinned from this environment: MLflow's own inference loads the model in a subprocess
    (slow) and cannot know that `tastyrec` itself must be installed to unpickle the pyfunc."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "pyarrow", "scikit-learn", "tastyrec"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")  # no local tag: torch 2.13.0+cpu
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


# ---------------------------------------------------------------------------------------------
# champion bookkeeping
# ---------------------------------------------------------------------------------------------
def _not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _alias_version(client: MlflowClient, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException as exc:
        if _not_found(exc) or "alias" in str(exc).lower():
            return None
        raise


def _history(client: MlflowClient) -> list[int]:
    raw = client.get_registered_model(MODEL_NAME).tags.get(HISTORY_TAG)
    try:
        return [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        return []


def _set_champion(client: MlflowClient, version: int, history: list[int]) -> None:
    """Move the alias and record the move (the alias is set first: it is what readers use)."""
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    client.set_registered_model_tag(MODEL_NAME, HISTORY_TAG, json.dumps(history[-HISTORY_KEEP:]))


def _with_current(history: list[int], current: int | None) -> list[int]:
    """The history with the actual champion on top (the alias may have been moved elsewhere)."""
    if current is not None and (not history or history[-1] != current):
        return [*history, current]
    return history


def _gate_value(client: MlflowClient, version: int) -> float | None:
    tags = client.get_model_version(MODEL_NAME, str(version)).tags
    return _finite(tags.get(_metric_tag(GATE_METRIC)))


def _require_model(client: MlflowClient) -> None:
    try:
        client.get_registered_model(MODEL_NAME)
    except MlflowException as exc:
        if _not_found(exc):
            raise RegistryError(f"no model {MODEL_NAME!r} is registered yet: train one first") from None
        raise


def _existing_versions(client: MlflowClient) -> list[int]:
    return sorted(int(mv.version) for mv in client.search_model_versions(f"name='{MODEL_NAME}'"))


def _require_version(client: MlflowClient, version: int) -> ModelVersion:
    _require_model(client)
    try:
        return client.get_model_version(MODEL_NAME, str(version))
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        known = ", ".join(map(str, _existing_versions(client))) or "none"
        raise RegistryError(f"model {MODEL_NAME!r} has no version {version} (versions: {known})") from None


# ---------------------------------------------------------------------------------------------
# log + register + gate
# ---------------------------------------------------------------------------------------------
def log_and_register(
    ws: Workspace,
    model_dir: str | Path,
    params: dict[str, Any],
    history: list[dict[str, Any]],
    evaluation: dict[str, Any],
    input_example: pd.DataFrame,
    description: str = "",
) -> RegisterResult:
    """Log one training run (params, curves, test metrics, plots, evaluation JSON, the pyfunc with
    signature and input example), register it as a new version of "tastyrec-dlrm" and apply the
    champion gate: "champion" moves only if the new test NDCG@10 is strictly greater.

    `evaluation` has "model" (flat metrics dict), "baselines" (name -> metrics) and "oracle"
    (metrics or None); None / NaN metrics are skipped. `history` holds one dict per epoch with
    "epoch" and numeric entries such as train_loss / val_loss.
    """
    model_dir = Path(model_dir)
    try:
        predictor = Predictor.from_dir(model_dir)
    except FileNotFoundError as exc:
        raise RegistryError(f"{model_dir} is not a model directory ({exc.filename} missing)") from None
    example = _example(predictor, input_example)
    signature = _signature(predictor, example, predictor.predict(example))
    test_metrics = _flat_metrics(evaluation.get("model"))
    gate_value = test_metrics.get(GATE_METRIC)

    with tracking(ws) as client, tempfile.TemporaryDirectory() as tmp:
        exp_id = _experiment_id(client, ws)
        with mlflow.start_run(experiment_id=exp_id) as run:
            run_id = run.info.run_id
            mlflow.set_tags({"tastyrec.model_kind": predictor.kind, "tastyrec.model_dir": str(model_dir)})
            mlflow.log_params(_flat_params(params))
            for entry in history:
                step = int(entry.get("epoch", 0))
                curves = {mlflow_name(k): v for k, v in _flat_metrics(entry).items() if k != "epoch"}
                mlflow.log_metrics(curves, step=step)
            mlflow.log_metrics({_metric_tag(k): v for k, v in test_metrics.items()})
            mlflow.log_dict(_json_safe(evaluation), "evaluation.json")
            mlflow.log_dict(_json_safe(params), "params.json")
            plots = Path(tmp, "plots")
            plots.mkdir()
            loss_figure(history).savefig(plots / "loss_curves.png")
            ranking_figure(evaluation).savefig(plots / "ranking_vs_baselines.png")
            mlflow.log_artifacts(str(plots), "plots")
            # A copy named model_dir, so the logged layout is artifacts/model_dir/ whatever
            # the source folder is called.
            staged = shutil.copytree(model_dir, Path(tmp, MODEL_DIR_KEY))
            info = mlflow.pyfunc.log_model(
                name=PYFUNC_NAME,
                python_model=TastyrecModel(),
                artifacts={MODEL_DIR_KEY: str(staged)},
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
            )
            # Tagged at creation: no version ever exists without the metric the gate reads.
            tags = {_metric_tag(k): repr(v) for k, v in test_metrics.items()} | {KIND_TAG: predictor.kind}
            mv = mlflow.register_model(info.model_uri, MODEL_NAME, tags=tags)
        version = int(mv.version)

        if not client.get_registered_model(MODEL_NAME).description:
            client.update_registered_model(MODEL_NAME, description=REGISTERED_DESCRIPTION)
        text = description or (
            f"{predictor.kind} from run {run_id}; test ndcg@10 {_fmt(gate_value)}, "
            f"recall@10 {_fmt(test_metrics.get('recall@10'))}"
        )
        client.update_model_version(MODEL_NAME, str(version), description=text)

        # The gate. Serialised within the process; across processes two trainings finishing
        # at the same moment could both pass (the history tag still records both moves).
        with _MOVE_LOCK:
            champion = _alias_version(client, CHAMPION)
            new = f"version {version} (ndcg@10 {_fmt(gate_value)})"
            if champion is None:
                promoted, decision = True, f"{new} is the first champion: promoted"
            else:
                old = _gate_value(client, champion)
                # A champion without a test NDCG@10 loses to any version that has one.
                promoted = gate_value is not None and (old is None or gate_value > old)
                verb = "beats" if promoted else "does not beat"
                outcome = "promoted" if promoted else f"champion stays version {champion}"
                decision = f"{new} {verb} champion version {champion} ({_fmt(old)}): {outcome}"
            if promoted:
                _set_champion(client, version, [*_with_current(_history(client), champion), version])
        client.set_model_version_tag(MODEL_NAME, str(version), DECISION_TAG, decision)
        client.set_tag(run_id, DECISION_TAG, decision)
    return RegisterResult(version, run_id, promoted, decision, champion)


# ---------------------------------------------------------------------------------------------
# listing and moving the champion by hand
# ---------------------------------------------------------------------------------------------
def list_versions(ws: Workspace) -> list[dict[str, Any]]:
    """Every registered version, newest first: version, created (UTC ISO), ndcg@10, metrics (all
    test metrics from the version tags), aliases, run_id, description, model_kind, gate_decision."""
    if not _has_registry(ws):
        return []
    client = _client(ws)
    try:
        # search results leave aliases out; the registered model has them all (alias -> version)
        alias_map = client.get_registered_model(MODEL_NAME).aliases or {}
    except MlflowException as exc:
        if _not_found(exc):
            return []
        raise
    out = []
    for mv in client.search_model_versions(f"name='{MODEL_NAME}'"):
        metrics = {}
        for tag, value in mv.tags.items():
            if (name := _tag_to_metric(tag)) is not None:
                metrics[name] = _finite(value)
        aliases = [a for a, v in alias_map.items() if str(v) == str(mv.version)]
        out.append({
            "version": int(mv.version),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).isoformat(),
            GATE_METRIC: metrics.get(GATE_METRIC),
            "metrics": metrics,
            "aliases": sorted(aliases),
            "run_id": mv.run_id,
            "description": mv.description or "",
            "model_kind": mv.tags.get(KIND_TAG),
            "gate_decision": mv.tags.get(DECISION_TAG),
        })
    return sorted(out, key=lambda d: d["version"], reverse=True)


def champion_version(ws: Workspace) -> int | None:
    """The version the alias "champion" points to, or None."""
    if not _has_registry(ws):
        return None
    return _alias_version(_client(ws), CHAMPION)


def promote(ws: Workspace, version: int) -> ChampionMove:
    """Move "champion" to `version` by hand (the gate is not consulted)."""
    if not _has_registry(ws):
        raise RegistryError(f"no model registry in {ws.home}: train a model first")
    client = _client(ws)
    version = int(version)
    _require_version(client, version)
    with _MOVE_LOCK:
        current = _alias_version(client, CHAMPION)
        if current == version:
            return ChampionMove(version, current, f"version {version} already is the champion")
        _set_champion(client, version, [*_with_current(_history(client), current), version])
    was = f"version {current}" if current is not None else "no champion"
    return ChampionMove(version, current, f"champion moved to version {version} (was {was})")


def rollback(ws: Workspace) -> ChampionMove:
    """Move "champion" back to the version that held it before the current one."""
    if not _has_registry(ws):
        raise RegistryError(f"no model registry in {ws.home}: train a model first")
    client = _client(ws)
    _require_model(client)
    with _MOVE_LOCK:
        current = _alias_version(client, CHAMPION)
        if current is None:
            raise RegistryError(f"model {MODEL_NAME!r} has no champion to roll back")
        history = _with_current(_history(client), current)
        existing = set(_existing_versions(client))
        stack = history[:-1]
        # Walk back past repeats of the current version and versions deleted since.
        while stack and (stack[-1] == current or stack[-1] not in existing):
            stack.pop()
        if not stack:
            raise RegistryError(
                f"version {current} is the champion and no earlier champion is recorded: nothing to roll back to"
            )
        _set_champion(client, stack[-1], stack)
    return ChampionMove(stack[-1], current, f"champion rolled back from version {current} to version {stack[-1]}")


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def resolve(ws: Workspace, ref: str | int = CHAMPION) -> int:
    """The version number `ref` names: an int / digit string is a version, else an alias."""
    return int(_model_version(ws, ref).version)


def _model_version(ws: Workspace, ref: str | int) -> ModelVersion:
    if not _has_registry(ws):
        raise RegistryError(f"no model registry in {ws.home}: train a model first")
    client = _client(ws)
    _require_model(client)
    if isinstance(ref, int) or str(ref).isdigit():
        return _require_version(client, int(ref))
    version = _alias_version(client, str(ref))
    if version is None:
        raise RegistryError(f"model {MODEL_NAME!r} has no version with alias {ref!r}")
    return _require_version(client, version)


def load_predictor(ws: Workspace, ref: str | int = CHAMPION) -> tuple[Predictor, int]:
    """The Predictor of a registered version (default: the champion) and its version number.

    The alias is resolved on every call (a few SQLite reads), so a new champion is picked up; the
    model itself is loaded once per (home, version) and then served from an in-process cache.
    The key also holds the version's run id: a home deleted and rebuilt (new "version 1") must
    not be served the old model.
    """
    mv = _model_version(ws, ref)
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
    folder and load it from there; the Predictor holds everything in memory afterwards. Goes
    through MLflow's artifact repositories, so it keeps working when the store is a server."""
    client = _client(ws)
    root = client.get_model_version_download_uri(MODEL_NAME, str(version)).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp)
            flavor = Model.load(mlmodel).flavors["python_function"]
            relative = flavor["artifacts"][MODEL_DIR_KEY]["path"]
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/{relative}", dst_path=str(Path(tmp, "files"))
            )
            return Predictor.from_dir(local)
        except (MlflowException, OSError, KeyError) as exc:
            raise RegistryError(f"version {version}'s model files cannot be read from {root}: {exc}") from None
