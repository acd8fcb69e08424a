"""Shared fixtures: small warehouses built by the project's own generator with fixed seeds."""

from __future__ import annotations

import os

import pytest

os.environ["FEAST_USAGE"] = "False"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from tastyrec.config import Workspace  # noqa: E402
from tastyrec.warehouse.load import setup_synthetic  # noqa: E402

SMALL_CUSTOMERS = 1500
SEED = 7


@pytest.fixture(scope="session")
def small_ws(tmp_path_factory) -> Workspace:
    """A warehouse of 1,500 synthetic customers (seed 7). Tests must not modify it."""
    ws = Workspace.from_env(tmp_path_factory.mktemp("home"))
    setup_synthetic(ws, customers=SMALL_CUSTOMERS, seed=SEED)
    return ws
