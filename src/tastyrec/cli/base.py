"""The command line's shared parts: the Typer app, consoles, progress bars, errors, and the
silencing of known third-party noise (in the CLI only)."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tastyrec.config import Progress, Workspace, WorkspaceError, log_progress, progress_listener
from tastyrec.options import MODEL_CHOICES, SPLITS

# Choices the CLI refuses others of (Typer lists them in the error): one Enum per option.
ModelChoice = Enum("ModelChoice", {k: k for k in MODEL_CHOICES}, type=str)
SplitChoice = Enum("SplitChoice", {k: k for k in SPLITS}, type=str)


# Warnings of libraries we use that a user can do nothing about (ibis' fetch_arrow_table inside
# Feast's DuckDB store, SQLAlchemy's noload inside MLflow, ...). Libraries add filters of their
# own when imported, so the CLI drops them where they are shown instead. Tests still see them.
THIRD_PARTY = re.compile(r"[/\\]site-packages[/\\](ibis|feast|mlflow|sqlalchemy|alembic|pydantic|"
                         r"google|pkg_resources|setuptools|sklearn|implicit|dask|pyarrow)[/\\]")
QUIET_LOGGERS = {"mlflow": "ERROR", "alembic": "WARNING"}  # INFO lines, the cloudpickle notice


def quiet_third_party() -> None:
    """Silence known third-party warnings and log lines, in the CLI only (`tastyrec app` hands
    the environment variables on to the Streamlit process it becomes)."""
    show = warnings.showwarning
    if getattr(show, "tastyrec_quiet", False):
        return

    def show_ours(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)) \
                and THIRD_PARTY.search(filename or ""):
            return
        show(message, category, filename, lineno, file, line)

    show_ours.tastyrec_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show_ours
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", QUIET_LOGGERS["mlflow"])  # MLflow sets it again on import
    # (MLflow's download bars and its own deprecations: registry.tracking.quiet_mlflow, app included)


app = typer.Typer(help="tastyrec: menu-item recommendations for Tasty Bytes loyalty customers.",
                  no_args_is_help=True, add_completion=False)
registry_app = typer.Typer(help="List model versions and move the champion alias.")
app.add_typer(registry_app, name="registry")
# User text (paths, URLs, versions, city names) is never markup: "[/x]" in a path once crashed a
# command and "/tmp/[old]/stage" printed as "/tmp//stage". Styles are given as Text or style=,
# and nothing is highlighted: what is printed is what the code wrote. In a log, messages keep to
# one line (soft_wrap) and tables get room to stay readable (width).
PLAIN = {"markup": False, "highlight": False}
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty(), **PLAIN)
out = Console(**PLAIN) if sys.stdout.isatty() else Console(width=160, **PLAIN)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
# The time windows of `features` (and `pipeline`); None: derived from the data's span (features.windows)
WindowDaysOpt = Annotated[Optional[int], typer.Option(
    help="Label window in days; the last one is the test window (default: a quarter of the data's span, 7..91).")]
TrainWindowsOpt = Annotated[Optional[int], typer.Option(
    help="Training cutoffs (default: as many as the data's history allows, up to 4).")]
StepDaysOpt = Annotated[Optional[int], typer.Option(help="Days between training cutoffs (default: a quarter window).")]


@app.callback()
def main(ctx: typer.Context,
         home: Annotated[Optional[Path], typer.Option(
             "--home", envvar="TASTYREC_HOME",
             help="Workspace folder (default ./.tastyrec): a tastyrec workspace, or a folder that is empty or "
                  "does not exist yet.")] = None) -> None:
    quiet_third_party()
    ws = Workspace.from_env(home)
    try:
        ctx.obj = ws.check()  # before any command reads or writes it
    except WorkspaceError as e:
        fail(str(e))
    ctx.with_resource(plain_errors(ws, ctx.invoked_subcommand))


# Commands whose writes are all or nothing: a warehouse is built aside and swapped in whole, an
# ingest writes in one transaction, a campaign's rows and files are undone together. After a
# failure nothing of theirs is left.
ALL_OR_NOTHING = {"setup", "ingest", "recommend"}


# What an interrupted command leaves, where there is more to say than that it stopped.
INTERRUPTED = {
    "setup": "an existing warehouse is as it was (a new one is swapped in only when complete)",
    "ingest": "the warehouse is as it was (an ingest writes in one transaction)",
    "features": "the current features are as they were (a new run is swapped in only when complete)",
    "train": "`tastyrec train --resume` continues from the last completed epoch, if one was",
    "pipeline": "what was complete is kept; `tastyrec train --resume` continues a training from its last "
                "completed epoch, if one was",
}


@contextmanager
def plain_errors(ws: Workspace, command: str | None) -> Iterator[None]:
    """Around every command (Click hands a resource the command's exception): what any command
    may meet in the home, in plain words instead of a traceback: a WorkspaceError (a settings file
    that is not tastyrec's, ...), the file system refusing a write (disk full, read-only), and
    Ctrl-C (one line, status 130 as a shell gives a process that SIGINT ended)."""
    try:
        yield
    except KeyboardInterrupt:
        hint = f"; {INTERRUPTED[command]}" if command in INTERRUPTED else ""
        err.print(labelled("interrupted:", "yellow", f"tastyrec {command} stopped (Ctrl-C){hint}"))
        raise typer.Exit(130) from None
    except WorkspaceError as e:
        fail(str(e))
    except Exception as e:
        if (message := ws.write_failure(e)) is None:
            raise
        fail(message + ("; nothing was changed" if command in ALL_OR_NOTHING else ""))


PLAIN_EVERY_S = 30.0  # off a terminal, a stage still running says how far it got this often


def live(console: Console) -> bool:
    """Whether Rich can redraw bars on `console` (a terminal); elsewhere (a log file, a pipe) it
    would draw them once, at the end."""
    return console.is_terminal and not console.is_dumb_terminal


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """Progress on stderr; yields a (what, done, total) callback (also logged: see
    config.log_progress). On a terminal, Rich bars; elsewhere, `plain_progress`'s lines. Nothing
    is shown when not `enabled` (--json)."""
    if not enabled:
        yield log_progress
    elif live(err):
        with rich_progress() as update:
            yield update
    else:
        with plain_progress() as update:
            yield update


@contextmanager
def rich_progress() -> Iterator[Progress]:
    """One Rich bar per stage, redrawn in place."""
    with RichProgress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)
            log_progress(what, done, total)

        yield update


@contextmanager
def plain_progress() -> Iterator[Progress]:
    """One line per stage when it ends, "what: done/total (seconds)", and a "so far" line every
    PLAIN_EVERY_S seconds while one runs, each written out at once. Stages report only after
    their first step, so a stage's time counts from the end of the one before (or of an epoch
    trained in this process, see config.progress_listener): work that reports nothing (fitting
    the explore head, the baselines) counts towards the stage after it."""
    clock = time.perf_counter
    last = clock()  # the previous report of any stage: where the next stage's time starts
    running: dict[str, tuple[float, float]] = {}  # what -> (started, last line about it)

    def say(text: str) -> None:
        err.print(text)
        err.file.flush()

    def mark(what: str, done: int, total: int) -> None:
        nonlocal last
        last = clock()

    def update(what: str, done: int, total: int) -> None:
        now = clock()
        started, said = running.setdefault(what, (last, last))
        if done >= total:
            del running[what]  # the same stage may run again later (the seed baseline's preprocessing)
            counts = "" if total == 1 else f": {done:,}/{total:,}"
            say(f"{what}{counts} ({now - started:.1f} s)")
        elif now - said >= PLAIN_EVERY_S:
            running[what] = (started, now)
            say(f"{what}: {done:,}/{total:,} so far ({now - started:.1f} s)")
        log_progress(what, done, total)  # also marks `last` (the listener below)

    with progress_listener(mark):
        yield update


def labelled(label: str, style: str, message: str) -> Text:
    """`label` in `style`, then `message` exactly as written."""
    return Text.assemble((label, style), " ", message)


def visible(text: str) -> str:
    """`text` with its control characters written as escapes (\\n, \\x1b, \\x00): stored text must
    neither break a table row nor move the cursor or recolour the terminal (Rich prints them raw)."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Zl", "Zp")
                   else ch for ch in text)


def fail(message: str, code: int = 1) -> None:
    err.print(labelled("error:", "red", message))
    raise typer.Exit(code)


def warn(message: str, label: str = "warning:") -> None:
    err.print(labelled(label, "yellow", message))


def print_counts(counts: dict[str, int], title: str) -> None:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    out.print(table)


def _number(value) -> str:
    from tastyrec.metrics import finite

    return "-" if (v := finite(value)) is None else f"{v:.3f}"
