"""Where MLflow writes, and one training run logged to it.

The tracking + registry store of a workspace is `sqlite:///<home>/mlflow.db`, artifacts go to
`<home>/mlartifacts` (experiment "tastyrec"). A team shares a tracking server instead: with
MLFLOW_TRACKING_URI set to an http(s):// URL, runs, versions and aliases live on that server and
artifacts go through it (`mlflow server --serve-artifacts`: the experiment's artifact location is
the server's choice, clients never see its folder). Telemetry is switched off for the whole
package in `tastyrec/__init__.py`, before MLflow is imported; nothing here talks to a network
but a server named in MLFLOW_TRACKING_URI.

MLflow's fluent API (start_run, log_model, register_model) reads process-wide URIs, so
`tracking` points them at one workspace for the duration of a `with` block and restores them
afterwards (under a lock): several workspaces can be used in one process. Reads (list, promote,
rollback, load) use an `MlflowClient` with explicit URIs and touch no global state.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import httpx
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.telemetry import set_telemetry_client

from tastyrec.config import Workspace
from tastyrec.metrics import finite

# If something imported MLflow before tastyrec, its telemetry client may exist already; it
# re-reads the switches here and drops itself (it sends nothing before its first record).
set_telemetry_client()

MODEL_NAME = "tastyrec-dlrm"
EXPERIMENT = "tastyrec"
METRIC_PREFIX = "test_"  # run metrics and version tags: test_<name>, e.g. test_ndcg_at_10
PARAM_VALUE_MAX = 6000  # MLflow's limit on one param value

_URI_LOCK = threading.RLock()  # MLflow's process-wide tracking / registry URIs


class RegistryError(Exception):
    """A registry request that cannot be met (unknown version or alias, no champion, ...)."""


# A tracking server that is down: MLflow retries 7 times with backoff by default (4 minutes
# before an error); 3 retries say so within seconds. Set the variable to change it.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
_ANSWERED: set[str] = set()  # tracking servers that answered in this process


def server_uri() -> str | None:
    """The tracking server MLFLOW_TRACKING_URI names (http:// or https://), or None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri.rstrip("/") if uri.lower().startswith(("http://", "https://")) else None


def tracking_uri(ws: Workspace) -> str:
    """The tracking and registry URI of a workspace: the tracking server, else its SQLite file."""
    return server_uri() or f"sqlite:///{ws.mlflow_db}"


def check_server() -> None:
    """RegistryError, in plain words, when MLFLOW_TRACKING_URI names a server that does not
    answer (checked once per process and server; any HTTP answer counts)."""
    uri = server_uri()
    if uri is None or uri in _ANSWERED:
        return
    try:
        httpx.get(f"{uri}/health", timeout=10)
    except httpx.HTTPError as e:
        raise RegistryError(f"the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI) does not answer: {e}") from None
    _ANSWERED.add(uri)


MLFLOW_MODULES = r"mlflow\."  # where a warning raised inside MLflow is said to come from (SQLAlchemy's too)


def quiet_mlflow() -> None:
    """Keep MLflow's noise out of every process that uses the registry (the CLI, the app, the
    service): its "Downloading artifacts" bars, and deprecation warnings raised inside MLflow,
    which nobody using tastyrec can act on (SQLAlchemy's of `noload`, when MLflow's SQL store is
    first imported). The filter must come first: Feast, when imported, puts a "show once" filter
    for every DeprecationWarning before all others. (Only then is the list changed: each change
    lets "default" warnings already shown be shown again.)"""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read at each download
    first = warnings.filters[0] if warnings.filters else None
    if not (first and first[0] == "ignore" and first[2] is DeprecationWarning
            and getattr(first[3], "pattern", None) == MLFLOW_MODULES):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=MLFLOW_MODULES)


def client(ws: Workspace) -> MlflowClient:
    """A client of the workspace's store; every use of MLflow here starts with one."""
    quiet_mlflow()
    check_server()
    return MlflowClient(tracking_uri=tracking_uri(ws), registry_uri=tracking_uri(ws))


def has_registry(ws: Workspace) -> bool:
    """Whether there may be versions to read: a server always, a home once it has its SQLite file
    (reading must not create an empty one)."""
    return server_uri() is not None or ws.mlflow_db.exists()


def require_registry(ws: Workspace) -> MlflowClient:
    """A client, or a clear error (and nothing created) when the home has no registry yet."""
    if not has_registry(ws):
        raise RegistryError(f"no model registry in {ws.home}: train a model first")
    return client(ws)


def not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def experiment_id(mlflow_client: MlflowClient, ws: Workspace, name: str = EXPERIMENT) -> str:
    """The experiment `name` ("tastyrec": the training runs), created with its artifacts under
    <home>/mlartifacts (on a tracking server: where the server keeps artifacts)."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":  # deleted in the UI: runs could not be logged to it
            mlflow_client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    if server_uri():
        return mlflow_client.create_experiment(name)
    ws.mlartifacts.mkdir(parents=True, exist_ok=True)
    return mlflow_client.create_experiment(name, artifact_location=ws.mlartifacts.as_uri())


@contextmanager
def tracking(ws: Workspace) -> Iterator[MlflowClient]:
    """Point MLflow (fluent API included) at the workspace's store for the `with` block.

    Yields a client bound to the workspace; ensures the home, the artifact folder and the
    "tastyrec" experiment exist; what MLflow prints goes to stderr. The process-wide tracking /
    registry URIs (and the environment variables MLflow mirrors them into) are restored on exit,
    so other workspaces and other MLflow users in the same process are unaffected.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    ws.ensure()
    uri = tracking_uri(ws)
    # MLflow writes "View run ... at <server URL>" to stdout, which is for --json: to stderr
    with _URI_LOCK, redirect_stdout(sys.stderr):
        saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            bound = client(ws)
            experiment_id(bound, ws)
            yield bound
        finally:
            # None is what MLflow's own _use_tracking_uri restores: back to default resolution.
            mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]
            registry_utils._registry_uri = saved_registry
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# What register_model prints with MLflow's own eprint (to sys.stderr, not through logging): the
# version is in RegisterResult and in what the CLI prints. Anything else MLflow writes passes.
MLFLOW_NOTICES = re.compile(r"(Successfully registered model |Registered model .* already exists|Created version )")


@contextmanager
def without_mlflow_notices() -> Iterator[None]:
    """Hold what the block writes to sys.stderr, then write it out without MLflow's notices."""
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    finally:
        sys.stderr.write("".join(line for line in held.getvalue().splitlines(keepends=True)
                                 if not MLFLOW_NOTICES.match(line)))


# ---------------------------------------------------------------------------------------------
# names and values MLflow accepts
# ---------------------------------------------------------------------------------------------
def mlflow_name(name: str) -> str:
    """A metric / tag name MLflow accepts: "@" becomes "_at_" (ndcg@10 -> ndcg_at_10)."""
    out = name.replace("@", "_at_")
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in out)


def metric_tag(name: str) -> str:
    return METRIC_PREFIX + mlflow_name(name)


def tag_to_metric(tag: str) -> str | None:
    """Inverse of `metric_tag` for the tags this package writes; None for other tags."""
    if not tag.startswith(METRIC_PREFIX):
        return None
    return tag[len(METRIC_PREFIX):].replace("_at_", "@")


def flat_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The numeric, finite entries of a flat metrics dict (None / NaN are skipped)."""
    return {key: v for key, value in (metrics or {}).items() if (v := finite(value)) is not None}


def json_safe(obj: Any) -> Any:
    """obj with NaN / inf as None and numpy scalars / arrays as Python values (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return finite(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts flattened to dotted keys; values as strings within MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = mlflow_name(f"{prefix}{key}")
        if isinstance(value, dict) and value:
            out |= flat_params(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(json_safe(value))
            out[name] = text if len(text) <= PARAM_VALUE_MAX else text[: PARAM_VALUE_MAX - 3] + "..."
    return out
