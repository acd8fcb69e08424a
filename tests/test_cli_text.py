"""What the CLI prints is the text it was given: user text (paths, URLs, versions) is never read
as Rich markup, and MLflow's own registration notices stay off the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_registry import evaluation, trained  # noqa: F401  (the registry tests' tiny real model)
from typer.testing import CliRunner

from tastyrec import registry
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.preprocess import synthetic_frame


def tastyrec(home: Path, *args: str):
    return CliRunner().invoke(app, ["--home", str(home), *args])


def register(ws: Workspace, trained, ndcg: float) -> registry.RegisterResult:  # noqa: F811
    return registry.log_and_register(ws, trained.model_dir, {}, trained.history, evaluation(ndcg),
                                     input_example=synthetic_frame(30, seed=4))


@pytest.fixture(scope="module")
def registered(tmp_path_factory, trained) -> Workspace:  # noqa: F811
    """A home with one registered version (no warehouse)."""
    ws = Workspace.from_env(tmp_path_factory.mktemp("registered"))
    register(ws, trained, 0.4)
    return ws


@pytest.mark.parametrize("args, literal", [
    (["features", "--online-store", "redis//bad"],
     "online store 'redis//bad': expected 'sqlite' or redis://HOST:PORT[/DB]"),
    (["features", "--online-store", "redis://[::1]:6379/0"], "online store 'redis://[::1]:6379/0'"),
    (["setup", "--from-csv", "/x/[/x]"], "/x/[/x]: not a folder"),
    (["evaluate", "--version", "[/v]"], "model 'tastyrec-dlrm' has no version with alias '[/v]'"),
], ids=["redis-no-scheme", "redis-ipv6", "csv-folder", "version"])
def test_user_text_in_an_error_is_printed_as_written(registered, args, literal) -> None:
    done = tastyrec(registered.home, *args)
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output  # not a MarkupError
    assert f"error: {literal}" in " ".join(done.stderr.split())
    assert "Traceback" not in done.output and "MarkupError" not in done.output


def test_paths_with_brackets_are_printed_as_written(tmp_path) -> None:
    home, stage = tmp_path / "[old]" / "home", tmp_path / "[old]" / "stage"
    made = tastyrec(home, "setup", "--customers", "100")
    assert made.exit_code == 0, made.output
    exported = tastyrec(home, "export-csv", str(stage))
    assert exported.exit_code == 0, exported.output

    def squeezed(text: str) -> str:  # a table title wraps, at any character of a long path
        return "".join(text.split())

    assert squeezed(str(home / "warehouse.duckdb")) in squeezed(made.stdout)
    assert f"raw_pos.truck -> {stage / 'raw_pos' / 'truck' / 'truck.csv.gz'}" in exported.stdout


def test_registering_prints_no_mlflow_notices(tmp_path, trained, capfd) -> None:  # noqa: F811
    ws = Workspace.from_env(tmp_path)
    # the first creates the registered model, the second only adds a version: each has its notice
    assert [register(ws, trained, ndcg).version for ndcg in (0.3, 0.4)] == [1, 2]
    printed = capfd.readouterr()
    for notice in ("Successfully registered model", "already exists", "Created version"):
        assert notice not in printed.out + printed.err
