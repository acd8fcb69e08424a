"""The alias "champion": the gate that moves it after training, and moves by hand.

The alias moves to a new version only when its test NDCG@10 is strictly greater than the
champion's and the best baseline's on the same rows; `promote` and `rollback` move it by hand. Every move is recorded in the
registered-model tag "champion_history" (a JSON list of versions, oldest first), which is what
`rollback` walks back along.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tastyrec.config import Workspace
from tastyrec.evaluate import GATE_METRIC
from tastyrec.metrics import finite
from tastyrec.registry.tracking import (MODEL_NAME, RegistryError, has_registry, metric_tag, not_found,
                                        require_registry)

CHAMPION = "champion"
HISTORY_TAG = "champion_history"
WINDOW_TAG = "test_window"  # version tag: the test window and warehouse its test figures come from
HISTORY_KEEP = 100  # champion moves kept in the tag (a tag value is a bounded string)

_MOVE_LOCK = threading.RLock()  # champion moves within this process (gate, promote, rollback)


@dataclass(frozen=True)
class ChampionMove:
    """A move of the champion alias by hand (`promote`, `rollback`); `moved` is False when the
    version already was the champion."""

    version: int
    previous: int | None
    message: str
    moved: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def alias_version(client: MlflowClient, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException as exc:
        if not_found(exc) or "alias" in str(exc).lower():
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


def gate_value(client: MlflowClient, version: int) -> float | None:
    """The version's test NDCG@10, as tagged when it was registered."""
    return finite(client.get_model_version(MODEL_NAME, str(version)).tags.get(metric_tag(GATE_METRIC)))


def require_model(client: MlflowClient) -> None:
    try:
        client.get_registered_model(MODEL_NAME)
    except MlflowException as exc:
        if not_found(exc):
            raise RegistryError(f"no model {MODEL_NAME!r} is registered yet: train one first") from None
        raise


def existing_versions(client: MlflowClient) -> list[int]:
    return sorted(int(mv.version) for mv in client.search_model_versions(f"name='{MODEL_NAME}'"))


def require_version(client: MlflowClient, version: int) -> ModelVersion:
    require_model(client)
    try:
        return client.get_model_version(MODEL_NAME, str(version))
    except MlflowException as exc:
        if not not_found(exc):
            raise
        known = ", ".join(map(str, existing_versions(client))) or "none"
        raise RegistryError(f"model {MODEL_NAME!r} has no version {version} (versions: {known})") from None


def _champion_figure(client: MlflowClient, champion: int, window: str | None,
                     scored: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """(the champion's NDCG@10 on the new version's rows, None) when it can be had: scored now on
    those rows (`scored`), or stored from the same window; else (None, why not)."""
    if scored and scored.get("version") == champion:
        if scored.get("metrics") is not None:
            return finite(scored["metrics"].get(GATE_METRIC)), None
        return None, f"it cannot be scored on this test window ({scored.get('error')})"
    stored = client.get_model_version(MODEL_NAME, str(champion)).tags.get(WINDOW_TAG)
    if stored == window:
        return gate_value(client, champion), None
    return None, f"its figure comes from another test window ({stored or 'not recorded'}; this one: {window})"


def gate(client: MlflowClient, version: int, value: float | None,
         baseline: tuple[str, float | None] | None = None, window: str | None = None,
         scored_champion: dict[str, Any] | None = None) -> tuple[bool, str, int | None]:
    """Move "champion" to `version` if its test NDCG@10 `value` beats both the champion's (a
    champion without one loses to any version that has one) and the best baseline's
    (`baseline` = (name, NDCG@10) on the same rows). The first version of a registry always
    becomes champion, so the service has a model, with a warning when a baseline beat it.
    Returns (promoted, decision, previous).

    The champion's figure must come from the same rows: `scored_champion` ({"version",
    "metrics"}: the champion scored on the new version's rows), else the figure stored with it
    when its test window (version tag "test_window") is `window`. Without either, the champion
    stays and the decision says why.

    Serialised within the process; across processes two trainings finishing at the same moment
    could both pass (the history tag still records both moves).
    """
    name, base = baseline or (None, None)
    beats_baseline = base is None or (value is not None and value > base)
    lost = "" if beats_baseline else f"the best baseline, {name} ({fmt(base)})"
    with _MOVE_LOCK:
        champion = alias_version(client, CHAMPION)
        new = f"version {version} (ndcg@10 {fmt(value)})"
        if champion is None:
            promoted = True
            decision = f"{new} is the first champion: promoted"
            if lost:
                decision += f". WARNING: it does not beat {lost}; it is champion only because there is no other model"
        else:
            old, incomparable = _champion_figure(client, champion, window, scored_champion)
            if incomparable:
                promoted = False
                decision = (f"{new} cannot be compared with champion version {champion}: {incomparable}; champion "
                            f"stays version {champion} (`tastyrec registry promote {version}` moves it by hand)")
            else:
                beats_champion = value is not None and (old is None or value > old)
                promoted = beats_champion and beats_baseline
                verb = "beats" if beats_champion else "does not beat"
                outcome = "promoted" if promoted else f"champion stays version {champion}"
                now = ", scored now on the same rows" if scored_champion else ""
                decision = f"{new} {verb} champion version {champion} ({fmt(old)}{now})"
                if lost:
                    decision += f" {'but not' if beats_champion else 'nor'} {lost}"
                decision += f": {outcome}"
        if promoted:
            _set_champion(client, version, [*_with_current(_history(client), champion), version])
    return promoted, decision, champion


def champion_version(ws: Workspace) -> int | None:
    """The version the alias "champion" points to, or None."""
    if not has_registry(ws):
        return None
    return alias_version(require_registry(ws), CHAMPION)


def promote(ws: Workspace, version: int) -> ChampionMove:
    """Move "champion" to `version` by hand (the gate is not consulted)."""
    client = require_registry(ws)
    version = int(version)
    require_version(client, version)
    with _MOVE_LOCK:
        current = alias_version(client, CHAMPION)
        if current == version:
            return ChampionMove(version, current, f"version {version} already is the champion",
                                moved=False)
        _set_champion(client, version, [*_with_current(_history(client), current), version])
    was = f"version {current}" if current is not None else "no champion"
    return ChampionMove(version, current, f"champion moved to version {version} (was {was})")


def rollback(ws: Workspace) -> ChampionMove:
    """Move "champion" back to the version that held it before the current one."""
    client = require_registry(ws)
    require_model(client)
    with _MOVE_LOCK:
        current = alias_version(client, CHAMPION)
        if current is None:
            raise RegistryError(f"model {MODEL_NAME!r} has no champion to roll back")
        history = _with_current(_history(client), current)
        existing = set(existing_versions(client))
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
