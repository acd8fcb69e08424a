"""What the CLI prints is the text it was given: user text (paths, URLs, versions) is never read
as Rich markup, and MLflow's own registration notices stay off the terminal. Off a terminal (a
log, a pipe) it prints one plain line per stage and epoch as they happen; Ctrl-C is one line,
and ends `make run` cleanly; the app's process prints nothing of MLflow's."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_registry import evaluation, trained  # noqa: F401  (the registry tests' tiny real model)
from typer.testing import CliRunner

from tastyrec import registry
from tastyrec.cli import app
from tastyrec.config import Workspace
from tastyrec.model import AUTO_KINDS
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


# ---------------------------------------------------------------------------------------------
# Off a terminal (`make run > log`, a CI log, a pipe): plain lines as things happen
# ---------------------------------------------------------------------------------------------
STAGE = re.compile(r"^(?P<what>[a-z][a-z ():-]*?)(?:: (?P<done>[\d,]+)/(?P<total>[\d,]+))? \((?P<s>\d+\.\d) s\)$")
EPOCH = re.compile(r"^(?P<kind>[a-z-]+)(?P<role> probe)?, epoch (?P<epoch>\d+)/(?P<epochs>\d+): loss \d\.\d{4}, val \d\.\d{4}, "
                   r"[\d,]+ samples/s \((?P<s>\d+\.\d) s\)$")
NOT_OURS = ("Successfully registered model", "Created version", "already exists", "SADeprecationWarning",
            "DeprecationWarning", "Downloading artifacts", "Traceback")


def cli_env() -> dict[str, str]:
    """The environment of a CLI whose stderr is a pipe, as in a log: nothing forces Rich's terminal mode."""
    return {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TASTYREC_HOME")}


def timed_lines(stream, into: list[tuple[float, str]]) -> threading.Thread:
    """Read `stream` line by line in a thread, each line with the time it arrived."""
    def read() -> None:
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def home_copy(trained_ws, tmp_path) -> Path:
    """A copy of the session's trained home (warehouse, features, a champion), without its checkpoints."""
    return shutil.copytree(trained_ws.home, tmp_path / "home", ignore=shutil.ignore_patterns("checkpoints"))


def test_off_a_terminal_each_stage_and_epoch_is_one_plain_line_as_it_happens(home_copy) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(home_copy), "pipeline",
                             "--epochs", "1", "--seed-samples", "0", "--reprobe"], env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[tuple[float, str]] = []
    reader = timed_lines(proc.stderr, lines)
    stdout = proc.stdout.read()
    proc.wait(timeout=600)  # a guard against a hang, not a timing check
    reader.join(timeout=30)
    text = "\n".join(line for _, line in lines)
    assert proc.returncode == 0, text[-3000:]
    for noise in ("\x1b", "\r", "━", *NOT_OURS):  # no Rich bar drawn at the end, nothing of MLflow's or SQLAlchemy's
        assert noise not in text, f"{noise!r} in stderr:\n{text}"
    # what the warehouse is comes first, as what follows is built on it
    assert lines[0][1].startswith(f"reusing the warehouse at {home_copy / 'warehouse.duckdb'}")

    stages = [(t, m["what"], float(m["s"])) for t, line in lines if (m := STAGE.match(line))]
    epochs = [(t, m["kind"], m["epoch"], m["epochs"]) for t, line in lines if (m := EPOCH.match(line)) and m["role"]]
    # --model auto: one epoch of each kind, each line saying which, and that it is a probe
    assert sorted((kind, n, of) for _, kind, n, of in epochs) == [(kind, "1", "1") for kind in sorted(AUTO_KINDS)]
    names = [what for _, what, _ in stages]
    order = ["feature snapshots", "feast apply", "materialise", "training set (time split)", "training tensors",
             "validation tensors", "scoring the test window", "baselines and oracle", "register"]
    assert [name for name in names if name in order] == order, names
    assert names[-1] == "register"
    first_epoch, last_tensors = min(t for t, *_ in epochs), max(t for t, what, _ in stages if what == "validation tensors")
    assert last_tensors <= first_epoch <= min(t for t, what, _ in stages if what == "scoring the test window"), text
    # written as they happen, not all at the end: the lines arrive over about as long as the
    # stages they report took (held back to the end, they would arrive within milliseconds)
    (t_first, _, _), (t_last, _, _) = stages[0], stages[-1]
    assert t_last - t_first >= 0.5 * sum(s for _, _, s in stages[1:]) > 0.5, lines
    assert "NDCG@10" in stdout and "NDCG@10" not in text  # results on stdout, progress on stderr


def test_ctrl_c_in_pipeline_is_one_plain_line(home_copy) -> None:
    # SIGINT's default action in the child: a test run in the background (CI, nohup) passes it on as
    # ignored, and an ignored SIGINT never becomes a KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "tastyrec.cli", "--home", str(home_copy), "pipeline",
                             "--epochs", "1", "--seed-samples", "0", "--reprobe"], env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[tuple[float, str]] = []
    reader = timed_lines(proc.stderr, lines)
    deadline = time.monotonic() + 300
    while not any(line.startswith("feature snapshots") for _, line in lines):  # the features are being built
        assert proc.poll() is None and time.monotonic() < deadline, lines
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    proc.wait(timeout=120)
    reader.join(timeout=30)
    text = "\n".join(line for _, line in lines)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert [line for _, line in lines if line.startswith("interrupted:")] == [
        "interrupted: tastyrec pipeline stopped (Ctrl-C); what was complete is kept; `tastyrec train --resume` "
        "continues a training from its last completed epoch, if one was"]


def test_the_app_process_prints_nothing_of_mlflow(registered) -> None:
    """What the app's process does with the registry (its Model page, after the engine opened the
    online store: Feast, when imported, shows every DeprecationWarning once) prints no warning and
    no download bar of MLflow's."""
    script = ("import sys; import feast; from tastyrec.config import Workspace; "
              "from tastyrec.registry import list_versions, load_predictor; ws = Workspace.from_env(sys.argv[1]); "
              "assert list_versions(ws); load_predictor(ws)")
    done = subprocess.run([sys.executable, "-c", script, str(registered.home)], env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("Warning", *NOT_OURS):
        assert noise not in done.stderr, done.stderr


FAKE_TASTYREC = """#!/bin/sh
# `make run`'s commands, each as short as can be: the service stops on SIGINT, the app on SIGTERM
case "$1" in
pipeline) echo "pipeline: done" ;;
app) echo $$ > "$(dirname "$0")/app.pid"; trap 'echo "app: stopping"; exit 0' TERM; echo "app: up"
     while :; do sleep 0.2; done ;;
serve) echo $$ > "$(dirname "$0")/serve.pid"; trap 'echo "serve: stopping"; exit 0' INT; echo "serve: up"
       while :; do sleep 0.2; done ;;
esac
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_ctrl_c_ends_make_run_cleanly(tmp_path) -> None:
    """Ctrl-C in the terminal of `make run` (a pseudo-terminal here: the key reaches its foreground
    process group) stops the service and the app; make says "stopped" and exits 0."""
    import pty

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tastyrec"
    fake.write_text(FAKE_TASTYREC)
    fake.chmod(0o755)
    (bin_dir / ".installed").touch()  # newer than pyproject.toml: nothing to install
    repo = Path(__file__).resolve().parents[1]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own, the pseudo-terminal as its terminal
        # Ctrl-C as in a terminal: a test run in the background (CI, nohup) passes SIGINT on as
        # ignored, and a shell started with it ignored cannot trap it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvp("make", ["make", "--no-print-directory", "-C", str(repo), f"BIN={bin_dir}", "run"])
    output, sent = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:  # the terminal closed: make has exited
            break
        if ready and not chunk:
            break
        output += chunk
        if not sent and b"serve: up" in output and b"app: up" in output:
            os.write(fd, b"\x03")  # Ctrl-C
            sent = True
    exited, status = os.waitpid(pid, os.WNOHANG)
    while not exited and time.monotonic() < deadline + 10:  # the terminal closes just before make exits
        time.sleep(0.1)
        exited, status = os.waitpid(pid, os.WNOHANG)
    if not exited:  # never hang the suite: stop make and the fakes, then fail with what it printed
        for leftover in (bin_dir / "serve.pid", bin_dir / "app.pid"):
            if leftover.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(leftover.read_text()), signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert exited, f"make run did not end within 60 s of Ctrl-C:\n{text}"
    assert sent, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "serve: stopping" in text and "app: stopping" in text and "stopped: the service and the app" in text
    assert "Error" not in text and "Interrupt" not in text, text
    app = int((bin_dir / "app.pid").read_text())
    with pytest.raises(ProcessLookupError):  # nothing left running
        os.kill(app, 0)
