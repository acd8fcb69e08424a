"""The home (--home / TASTYREC_HOME) misused, through the command line: a file, another program's
folder, a settings file that is not tastyrec's, a read-only home, a full disk. Each is refused or
reported in plain words, with no traceback, and leaves what was there as it was."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from tastyrec import campaigns
from tastyrec.cli import app
from tastyrec.config import MARKER, Workspace
from tastyrec.warehouse.load import setup_synthetic

from test_recommend import some_customers, sql
from test_warehouse import squeeze


def tastyrec(home: Path, *args: str, **kwargs):
    return CliRunner().invoke(app, ["--home", str(home), *args], **kwargs)


def refused(done, message: str) -> None:
    """Exit 1 with `message` after "error:", and no traceback (a SystemExit, not the exception)."""
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), (done.output, done.exception)
    assert squeeze(f"error: {message}") in squeeze(done.output), done.output


def contents(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


@contextmanager
def mounted(target: Path, *steps: list[str]) -> Iterator[None]:
    """`mount <step> target` for each step, undone when the block ends; skips the test where this
    process may not mount (only root with CAP_SYS_ADMIN may, as in this project's container)."""
    is_mounted = False
    try:
        for step in steps:
            done = subprocess.run(["mount", *step, str(target)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount here ({done.stderr.strip()}); the simulated variant still runs")
            is_mounted = True
        yield
    finally:
        if is_mounted:  # lazily: this process may still hold files there open (the engine's SQLite stores)
            subprocess.run(["umount", "--lazy", str(target)], check=True)


def read_only(home: Path):
    """`home` as a read-only file system (a bind mount onto itself): root's writes fail too."""
    return mounted(home, ["--bind", str(home)], ["-o", "remount,bind,ro"])


@pytest.fixture
def own_trained(trained_ws, tmp_path) -> Workspace:
    return Workspace.from_env(shutil.copytree(trained_ws.home, tmp_path / "home"))


@pytest.fixture
def small(tmp_path) -> Workspace:
    ws = Workspace.from_env(tmp_path / "home")
    setup_synthetic(ws, customers=30, seed=3)
    return ws


def test_a_file_as_home_is_refused_in_plain_words(tmp_path) -> None:
    home = tmp_path / "notes.txt"
    home.write_text("mine")
    for args in (["setup", "--customers", "30"], ["campaigns"], ["registry", "list"]):
        refused(tastyrec(home, *args), f"{home} is a file, not a folder")
    refused(CliRunner().invoke(app, ["campaigns"], env={"TASTYREC_HOME": str(home)}),
            f"{home} is a file, not a folder")
    assert home.read_text() == "mine"


def test_help_needs_no_home(tmp_path) -> None:
    home = tmp_path / "notes.txt"
    home.write_text("mine")
    done = CliRunner().invoke(app, ["--help"], env={"TASTYREC_HOME": str(home)})
    assert done.exit_code == 0 and "Usage" in done.output


def test_another_programs_folder_is_refused_and_left_untouched(tmp_path) -> None:
    home = tmp_path / "project"
    home.mkdir()
    (home / "notes.txt").write_text("my notes\n")
    (home / "settings.json").write_text('// my editor\'s settings\n{"tabSize": 4}\n')  # not JSON: comments
    before = contents(home)
    for args in (["setup", "--customers", "30"], ["features"], ["campaigns"], ["registry", "list"], ["train"]):
        refused(tastyrec(home, *args), f"{home} is not a tastyrec workspace (it holds notes.txt, settings.json)")
    assert contents(home) == before


def test_an_empty_or_new_folder_becomes_a_workspace_and_stays_one(tmp_path) -> None:
    empty, new = tmp_path / "empty", tmp_path / "new" / "nested"
    empty.mkdir()
    done = tastyrec(empty, "setup", "--customers", "30")
    assert done.exit_code == 0, done.output
    assert (empty / MARKER).exists() and (empty / "warehouse.duckdb").exists()
    (empty / "notes.txt").write_text("mine")  # a workspace stays one, whatever is put beside it
    assert tastyrec(empty, "campaigns").exit_code == 0
    assert tastyrec(new, "campaigns").exit_code == 0 and not new.exists()  # reading creates nothing


def test_workspaces_from_before_the_marker_keep_working(small, trained_ws, tmp_path) -> None:
    (small.home / MARKER).unlink()  # a home made before the marker: its warehouse says what it is
    assert tastyrec(small.home, "campaigns").exit_code == 0
    assert tastyrec(small.home, "registry", "list").exit_code == 0
    features_only = tmp_path / "features-only"
    (features_only / "feature_repo").mkdir(parents=True)
    (features_only / "feature_repo" / "summary.json").write_text("{}")
    assert Workspace.from_env(features_only).check().home == features_only
    assert tastyrec(trained_ws.home, "registry", "list").exit_code == 0


def test_a_settings_file_that_is_not_json_is_named(small) -> None:
    small.settings_file.write_text('// comments are not JSON\n{"online_store": "sqlite"}\n')
    before = small.settings_file.read_text()
    done = tastyrec(small.home, "features")
    refused(done, f"{small.settings_file} is not valid JSON")
    assert squeeze("it is not tastyrec's settings file") in squeeze(done.output)
    assert small.settings_file.read_text() == before


def save_args(ws: Workspace, name: str) -> list[str]:
    return ["recommend", "--customer", str(some_customers(ws, 1)[0]), "--save", name]


def test_a_read_only_home_says_so_on_save_and_setup_and_still_reads(own_trained) -> None:
    home = own_trained.home
    with read_only(home):
        assert tastyrec(home, "campaigns").exit_code == 0
        assert tastyrec(home, "registry", "list").exit_code == 0
        refused(tastyrec(home, *save_args(own_trained, "read-only")),
                f"cannot write to {home}: read-only file system; nothing was changed")
        refused(tastyrec(home, "setup", "--customers", "30", "--force"),
                f"cannot write to {home}: read-only file system; nothing was changed")
    assert sql(own_trained, "SELECT count(*) FROM ml.recommendations")[0][0] == 0


def test_a_read_only_home_simulated(own_trained, monkeypatch) -> None:
    """Where nothing may be mounted: DuckDB's own words when it cannot open the file for writing."""
    from tastyrec.warehouse import load

    real = load.connect

    def read_only_fs(path, read_only=False):
        if not read_only:
            raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Read-only file system')
        return real(path, read_only=True)

    args = save_args(own_trained, "read-only")
    monkeypatch.setattr(load, "connect", read_only_fs)
    refused(tastyrec(own_trained.home, *args),
            f"cannot write to {own_trained.home}: read-only file system; nothing was changed")
    assert not campaigns.stage_dir(own_trained).exists()


def building(ws: Workspace) -> Path:
    return ws.warehouse.with_name(ws.warehouse.name + ".building")


@pytest.mark.parametrize("failure", ["OSError", "DuckDB"])
def test_disk_full_during_setup_changes_nothing(small, monkeypatch, failure) -> None:
    from tastyrec.warehouse import load

    before = small.warehouse.read_bytes()
    wal = f"{building(small)}.wal"
    if failure == "OSError":  # Python writing a file
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(building(small)))

        monkeypatch.setattr(load, "generate", full)
        written = building(small)
    else:  # DuckDB committing: the text of a real full disk (a tmpfs), as a TransactionException
        real = load.run_sql

        def full(con, package, name):
            if name == "05_synth.sql":
                raise duckdb.TransactionException(f'TransactionContext Error: Failed to commit: Could not write '
                                                  f'file "{wal}": No space left on device')
            return real(con, package, name)

        monkeypatch.setattr(load, "run_sql", full)
        written = wal
    refused(tastyrec(small.home, "setup", "--customers", "40", "--force"),
            f"no space left on device while writing {written}; nothing was changed")
    assert small.warehouse.read_bytes() == before
    assert sorted(p.name for p in small.home.iterdir()) == [MARKER, "warehouse.duckdb"]


def test_disk_full_during_setup_on_a_real_full_file_system(tmp_path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted(disk, ["-t", "tmpfs", "-o", "size=8m", "tmpfs"]):
        ws = Workspace.from_env(disk / "home")
        assert tastyrec(ws.home, "setup", "--customers", "30").exit_code == 0
        before = ws.warehouse.read_bytes()
        free = shutil.disk_usage(disk).free
        with open(disk / "filler", "wb") as filler:  # leave 200 KiB: not enough for another warehouse
            filler.write(bytes(free - 200 * 1024))
        done = tastyrec(ws.home, "setup", "--customers", "30", "--force")
        refused(done, f"no space left on device while writing {building(ws)}")  # or its .wal
        assert squeeze("; nothing was changed") in squeeze(done.output)
        assert ws.warehouse.read_bytes() == before
        assert sorted(p.name for p in ws.home.iterdir()) == [MARKER, "warehouse.duckdb"]


def test_disk_full_during_a_save_changes_nothing(own_trained, monkeypatch) -> None:
    def full(writer, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("pyarrow.parquet.ParquetWriter.__init__", full)
    done = tastyrec(own_trained.home, *save_args(own_trained, "full"))
    stage = campaigns.stage_dir(own_trained)
    refused(done, f"no space left on device while writing {stage}/.")
    assert squeeze(".parquet.tmp; nothing was changed") in squeeze(done.output)
    assert sql(own_trained, "SELECT count(*) FROM ml.recommendations")[0][0] == 0
    assert list(stage.iterdir()) == []
