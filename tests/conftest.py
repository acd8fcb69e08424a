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


# `make test` runs the suite on two xdist workers (`-n 2 --dist loadgroup`): each test module is
# one unit of work, so module fixtures are built once; the modules that build and run the image
# share one unit (the image is built once, and two builds never race for the same tags) and go
# first, as it is the longest unit (a cold build takes minutes), then the other slow ones.
PODMAN_MODULES = ("test_image", "test_compose")
SLOW_MODULES = ("test_tracking_server", "test_bench", "test_multinode", "test_pipeline")


@pytest.hookimpl(tryfirst=True)  # after pytest-randomly's shuffle, before xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    def unit(item) -> str:
        module = item.path.stem
        return "podman" if module in PODMAN_MODULES else module

    def rank(item) -> int:
        name = unit(item)
        return 0 if name == "podman" else 1 if name in SLOW_MODULES else 2

    items.sort(key=rank)  # stable: the shuffled order stays within each rank
    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit(item)))
