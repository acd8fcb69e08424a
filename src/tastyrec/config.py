"""Workspace paths and settings. No side effects at import time: nothing is created here."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

DEFAULT_HOME = "./.tastyrec"

Progress = Callable[[str, int, int], None]  # (what, done, total): long work reports through it
PROGRESS_LOG = "TASTYREC_PROGRESS_LOG"  # a file: one JSON line per progress update, for unattended runs


def log_progress(what: str, done: int, total: int) -> None:
    """Append {"time", "what", "done", "total"} to the file TASTYREC_PROGRESS_LOG names, if set
    (bench/fullscale.py times the stages of a run with it)."""
    if path := os.environ.get(PROGRESS_LOG):
        with open(path, "a") as log:
            log.write(json.dumps({"time": time.time(), "what": what, "done": done, "total": total}) + "\n")

# The synthetic data set covers these dates; the generator records the truth for its last
# WINDOW_DAYS, which is the test window that features.windows derives from this span.
DATA_START = date(2020, 1, 1)
DATA_END = date(2022, 12, 31)  # inclusive
WINDOW_DAYS = 91

# DuckDB's memory limit for every connection that reads the warehouse or builds features or
# training sets. The feature build of 222,000 customers needs about 6 GB (one snapshot's history
# lists). Set the environment variable TASTYREC_DUCKDB_MEMORY (a DuckDB size, e.g. "3GB") to change it.
DEFAULT_DUCKDB_MEMORY = "6GB"


def duckdb_memory() -> str:
    """The DuckDB memory limit: TASTYREC_DUCKDB_MEMORY, else DEFAULT_DUCKDB_MEMORY (read at each call)."""
    return os.environ.get("TASTYREC_DUCKDB_MEMORY") or DEFAULT_DUCKDB_MEMORY


@dataclass(frozen=True)
class Workspace:
    """The folder ("home") that holds everything one tastyrec installation writes."""

    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "Workspace":
        """Resolve the home from the argument, then TASTYREC_HOME, then ./.tastyrec."""
        chosen = home or os.environ.get("TASTYREC_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def feature_repo(self) -> Path:
        return self.home / "feature_repo"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def stage(self) -> Path:
        return self.home / "stage"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def settings_file(self) -> Path:
        return self.home / "settings.json"

    def settings(self) -> dict:
        """What this workspace remembers between commands (e.g. its online store); {} if nothing."""
        try:
            return json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            return {}

    def remember(self, **values: str) -> None:
        """Add or replace settings (written whole, then renamed: never half-written)."""
        self.ensure()
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.settings() | values, indent=2))
        os.replace(tmp, self.settings_file)

    def ensure(self) -> "Workspace":
        """Create the home folder (called by commands that write, never at import)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self
