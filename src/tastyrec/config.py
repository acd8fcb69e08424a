"""Workspace paths and settings. No side effects at import time: nothing is created here."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

DEFAULT_HOME = "./.tastyrec"

# (what, done, total): long work reports through it after each step; a stage has ended when done
# == total (the same `what` may run again later). The CLI draws bars or prints lines (cli.base).
Progress = Callable[[str, int, int], None]
PROGRESS_LOG = "TASTYREC_PROGRESS_LOG"  # a file: one JSON line per progress update, for unattended runs
_LISTENERS: list[Progress] = []  # see progress_listener


def log_progress(what: str, done: int, total: int) -> None:
    """Tell this process's listeners (`progress_listener`), and append {"time", "what", "done",
    "total"} to the file TASTYREC_PROGRESS_LOG names, if set (bench/fullscale.py times the stages
    of a run with it). Training reports its epochs here ("epoch <kind>"), as it takes no callback."""
    for listener in tuple(_LISTENERS):
        listener(what, done, total)
    if path := os.environ.get(PROGRESS_LOG):
        with open(path, "a") as log:
            log.write(json.dumps({"time": time.time(), "what": what, "done": done, "total": total}) + "\n")


@contextmanager
def progress_listener(listener: Progress) -> Iterator[None]:
    """Within the block, `listener` also hears every `log_progress` of this process (the CLI's
    plain lines time their stages from the end of an epoch trained in-process)."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


# The synthetic data set covers these dates; the generator records the truth for its last
# WINDOW_DAYS, which is the test window that features.windows derives from this span.
DATA_START = date(2020, 1, 1)
DATA_END = date(2022, 12, 31)  # inclusive
WINDOW_DAYS = 91

# DuckDB's memory limit for every connection that reads the warehouse or builds features or
# training sets. The feature build of 222,000 customers needs about 6 GB (one snapshot's history
# lists). Set the environment variable TASTYREC_DUCKDB_MEMORY (a DuckDB size, e.g. "3GB") to change it.
DEFAULT_DUCKDB_MEMORY = "6GB"
# Building a training set joins and sorts each split's rows with their history bags. More memory
# than it needs does not make it faster (N = 20,000 on 2 cores, the stage alone: 34 s and 2.1 GiB
# peak RSS under 1.5 GB, 31 s and 3.5 GiB under 3 GB, 29 s and 5.0 GiB under 6 GB), but its hash
# joins cannot all spill: at N = 222,000 (46M spine rows) 1.5 GB ran out and 4 GB did not. So the
# stage's limit grows with its spine rows, between these bounds (TASTYREC_DUCKDB_MEMORY, when set,
# applies instead).
TRAINING_SET_GB = (1.5, 4.0)
TRAINING_SET_MAX_GB = 8.0  # the most a build grows its limit to where the estimate was short
TRAINING_SET_BYTES_PER_ROW = 90


def training_set_memory(spine_rows: int) -> str:
    """The DuckDB memory limit of a training set build over `spine_rows` spine rows."""
    low, high = TRAINING_SET_GB
    return duckdb_memory(f"{min(high, max(low, spine_rows * TRAINING_SET_BYTES_PER_ROW / 1e9)):.2f}GB")


def duckdb_memory(default: str = DEFAULT_DUCKDB_MEMORY) -> str:
    """The DuckDB memory limit: TASTYREC_DUCKDB_MEMORY, else `default` (read at each call)."""
    return os.environ.get("TASTYREC_DUCKDB_MEMORY") or default


# What marks a folder as a tastyrec workspace: this file, written when tastyrec creates the home,
# or (homes made before the file existed) a warehouse or a features run. Anything else that is not
# empty belongs to someone else, and tastyrec refuses to write into it.
MARKER = ".tastyrec-workspace"
WORKSPACE_SIGNS = (MARKER, "warehouse.duckdb", "features.json", "feature_repo/summary.json")
# The file system refusing a write, as errno codes. DuckDB raises its own errors carrying the C
# library's text ('Could not write file "<path>": No space left on device', as an IOException, or a
# TransactionException at a commit), and so may Arrow's OSErrors: the text counts too.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FORBIDDEN = (errno.EACCES, errno.EPERM)
QUOTED_PATH = re.compile(r'"([^"]+)"')


class WorkspaceError(Exception):
    """The home cannot be used as it is; the message says why in plain words."""


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
        """The Feast repository of the current features run, <home>/feature_runs/<run>, as
        <home>/features.json names it (`tastyrec features` builds a run aside and swaps the
        pointer when it is complete); <home>/feature_repo in a workspace from before runs."""
        try:
            return self.home / json.loads(self.features_pointer.read_text())["current"]
        except FileNotFoundError:
            return self.home / "feature_repo"

    @property
    def feature_runs(self) -> Path:
        return self.home / "feature_runs"

    @property
    def features_pointer(self) -> Path:
        return self.home / "features.json"

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
            values = json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WorkspaceError(f"{self.settings_file} is not valid JSON ({e}): it is not tastyrec's "
                                 "settings file; move it away (tastyrec writes a new one when it needs one)") from None
        if not isinstance(values, dict):
            raise WorkspaceError(f"{self.settings_file} is not tastyrec's settings file (not a JSON object); "
                                 "move it away (tastyrec writes a new one when it needs one)")
        return values

    def remember(self, **values: str) -> None:
        """Add or replace settings (written whole, then renamed: never half-written)."""
        self.ensure()
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.settings() | values, indent=2))
        os.replace(tmp, self.settings_file)

    def ensure(self) -> "Workspace":
        """Create the home folder and mark it as a workspace (called by commands that write, never
        at import)."""
        self.home.mkdir(parents=True, exist_ok=True)
        marker = self.home / MARKER
        if not marker.exists():
            marker.write_text("This folder is a tastyrec workspace (tastyrec --home).\n")
        return self

    def is_workspace(self) -> bool:
        return any((self.home / sign).exists() for sign in WORKSPACE_SIGNS)

    def check(self) -> "Workspace":
        """Refuse a home that is not tastyrec's: a file, or a folder holding other things. A home
        that does not exist yet, or is empty, becomes a workspace when a command first writes."""
        if self.home.exists() and not self.home.is_dir():
            raise WorkspaceError(f"{self.home} is a file, not a folder: the home (--home or TASTYREC_HOME) must be "
                                 "a tastyrec workspace, or a folder that is empty or does not exist yet")
        if self.home.is_dir() and not self.is_workspace():
            held = sorted(p.name for p in self.home.iterdir())
            if held:
                shown = ", ".join(held[:3]) + (f" and {len(held) - 3:,} more" if len(held) > 3 else "")
                raise WorkspaceError(f"{self.home} is not a tastyrec workspace (it holds {shown}): give a folder "
                                     "that is empty or does not exist yet, or an existing workspace; "
                                     "nothing was changed")
        return self

    def write_failure(self, error: BaseException) -> str | None:
        """`error` in plain words if it is the file system refusing a write (disk full, a read-only
        or forbidden home), else None."""
        duckdb = sys.modules.get("duckdb")  # not imported: then the error cannot be one of DuckDB's
        if isinstance(error, OSError) and error.errno is not None:
            code, path = error.errno, error.filename
        elif isinstance(error, OSError) or (duckdb is not None and isinstance(error, duckdb.Error)):
            text = str(error)
            code = next((c for c in (*NO_SPACE, errno.EROFS, *FORBIDDEN) if os.strerror(c) in text), None)
            path = found[1] if (found := QUOTED_PATH.search(text)) else None
        else:
            return None
        if code in NO_SPACE:
            return f"{os.strerror(code).lower()} while writing {path or self.home}"
        if code == errno.EROFS:
            return f"cannot write to {self.home}: read-only file system"
        if code in FORBIDDEN:  # a read may meet it too: the path, not "cannot write"
            return f"cannot use {path or self.home}: {os.strerror(code).lower()}"
        return None
