"""Shared fixtures: small warehouses built by the project's own generator with fixed seeds."""

from __future__ import annotations

import os

import pytest

from tastyrec.config import Workspace  # importing tastyrec switches Feast and MLflow telemetry off
from tastyrec.warehouse.load import setup_synthetic

# A tracking server in the caller's environment would receive every test's runs: tests use each
# workspace's own SQLite store unless they start a server themselves (test_tracking_server.py).
os.environ.pop("MLFLOW_TRACKING_URI", None)

SMALL_CUSTOMERS = 1500
SEED = 7


@pytest.fixture(scope="session")
def small_ws(tmp_path_factory) -> Workspace:
    """A warehouse of 1,500 synthetic customers (seed 7). Tests must not modify it."""
    ws = Workspace.from_env(tmp_path_factory.mktemp("home"))
    setup_synthetic(ws, customers=SMALL_CUSTOMERS, seed=SEED)
    return ws


@pytest.fixture(scope="session")
def trained_ws(tmp_path_factory) -> Workspace:
    """400 synthetic customers (seed 42) through the whole pipeline: warehouse, features and a
    registered champion (2 epochs, no seed baseline). Read-only: copy the home to change it."""
    from tastyrec.jobs import pipeline_job
    from tastyrec.options import TrainOptions

    ws = Workspace.from_env(tmp_path_factory.mktemp("trained"))
    pipeline_job(ws, customers=400, seed=42, opts=TrainOptions(epochs=2, progress=False), seed_samples=0)
    return ws


# `make test` runs the suite on two xdist workers, one test module per unit of work
# (`-n 2 --dist loadfile`: module fixtures are built once). The longest units go first, so that
# no worker is left with one at the end: the image's module (a cold build takes minutes), then the
# other slow ones; the compose stack's after them, when the image it needs is built (podman.py
# builds it once at a time across workers). Within each rank the order stays pytest-randomly's.
FIRST = ("test_image", "test_tracking_server", "test_bench", "test_multinode", "test_pipeline", "test_compose")


@pytest.hookimpl(tryfirst=True)  # after pytest-randomly's shuffle (a wrapper), before xdist reads the order
def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: FIRST.index(item.path.stem) if item.path.stem in FIRST else len(FIRST))
