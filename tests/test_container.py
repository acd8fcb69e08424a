"""The Dockerfile, checked without building it (test_image.py builds and runs it): its ENTRYPOINT
and HEALTHCHECK commands run here with its ENV, what it installs matches pyproject.toml, and the
build's pip settings reach pip as secrets only (container/pip_settings.py writes them)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from servers import free_port, stop, wait_until
from tastyrec.service import HOME_ENV, TOKEN_ENV

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "container-token-5b1e"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments): comments dropped, continued lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def arguments(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from one FROM to the next)."""
    found: list[list[tuple[str, str]]] = []
    for instruction, args in instructions():
        if instruction == "FROM":
            found.append([])
        if found:
            found[-1].append((instruction, args))
    return found


def image_env() -> dict[str, str]:
    """The final stage's ENV variables (the `KEY=value ...` form), $VARIABLES expanded from here."""
    return dict(os.path.expandvars(item).split("=", 1) for instruction, args in stages()[-1]
                if instruction == "ENV" for item in shlex.split(args))


def build_args() -> dict[str, str]:
    """The ARG instructions' defaults."""
    return dict(args.split("=", 1) for args in arguments("ARG") if "=" in args)


def entrypoint() -> list[str]:
    """The exec-form ENTRYPOINT, with the venv's `tastyrec` in place of the image's."""
    (args,) = arguments("ENTRYPOINT")
    command = json.loads(args)
    assert command[0] == "tastyrec"
    return [str(Path(sys.executable).parent / "tastyrec"), *command[1:]]


def healthcheck() -> list[str]:
    """The exec-form HEALTHCHECK command (its options dropped)."""
    (args,) = arguments("HEALTHCHECK")
    return json.loads(args[args.index("CMD") + len("CMD"):])


def container_env(home: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | image_env() | {HOME_ENV: str(home)}
    return env | ({TOKEN_ENV: token} if token else {})


def test_the_entrypoint_refuses_to_start_without_a_token(tmp_path):
    done = subprocess.run(entrypoint(), env=container_env(tmp_path, None), capture_output=True, text=True,
                          timeout=120)  # a guard against a hang, not a timing check
    assert done.returncode == 1, done.stdout + done.stderr
    stderr = " ".join(done.stderr.split())  # rich wraps the message
    assert f"refusing to serve on 0.0.0.0 without a token: set {TOKEN_ENV}" in stderr
    assert "serving" not in done.stdout


def test_the_image_installs_the_pinned_torch_on_a_slim_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch"]
    base = re.fullmatch(r"python:(\d+\.\d+)-slim@sha256:[0-9a-f]{64}", build_args()["BASE_IMAGE"])  # by digest
    assert base, build_args()["BASE_IMAGE"]
    assert base[1] + ".0" in SpecifierSet(project["requires-python"])
    pins = [w for args in arguments("RUN") for w in shlex.split(args) if w.startswith("torch==")]
    assert pins == [f"torch{torch.specifier}"]
    builder, final = stages()
    pips = [args for instruction, args in builder if instruction == "RUN" and "python -m pip" in args]
    assert "torch==" in pips[0] and '${TORCH_INDEX:+--index-url "$TORCH_INDEX"}' in pips[0]
    assert pips[1].endswith("pip install --no-cache-dir -r requirements.lock")  # after torch: the pin is met
    assert pips[2].endswith("pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .")  # tastyrec alone
    # the image: the builder's venv and tastyrec's wheel, installed without resolving or an index
    assert ("COPY", "--from=builder /opt/tastyrec /opt/tastyrec") in final
    (install,) = [args for instruction, args in final if instruction == "RUN" and "pip" in args]
    assert "pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl" in install


def test_pip_settings_reach_the_build_as_secrets_only():
    """Every pip of the builder reads the settings from build secrets (mounted for that command,
    never in a layer); nothing else in the Dockerfile names them, and the image's pip needs none."""
    mounts = "--mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert "
    builder, final = stages()
    for instruction, args in builder:
        if instruction == "RUN" and "pip " in args:
            assert args.startswith(mounts), args
    rest = [args for instruction, args in builder + final if instruction != "RUN" or "--mount" not in args]
    assert not [args for args in rest if "pip.conf" in args or "pip-cert" in args or "PIP_" in args]


def test_the_hosts_pip_settings_are_rewritten_for_the_build(tmp_path):
    """container/pip_settings.py copies what `pip config list` shows, points the cert at the
    secret, and names the local paths the build must mount (a file:// index with its parent)."""
    wheels, index, cert = tmp_path / "wheels", tmp_path / "mirror" / "simple", tmp_path / "ca.pem"
    for folder in (wheels, index):
        folder.mkdir(parents=True)
    cert.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {
        "PIP_CONFIG_FILE": os.devnull,  # no pip.conf file is read: the settings below only
        "PIP_CERT": str(cert), "PIP_FIND_LINKS": str(wheels), "PIP_DEFAULT_TIMEOUT": "60",
        "PIP_EXTRA_INDEX_URL": f"file://{index} https://example.org/simple"}
    done = subprocess.run([sys.executable, str(ROOT / "container" / "pip_settings.py"), str(tmp_path / "out.conf")],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"cert {cert}", f"mount {index.parent}", f"mount {wheels}"]
    assert (tmp_path / "out.conf").read_text().splitlines() == [
        "[global]", "cert = /run/secrets/pip-cert", "default-timeout = 60",
        f"extra-index-url = file://{index} https://example.org/simple", f"find-links = {wheels}"]


def test_the_lock_file_pins_every_runtime_dependency_within_pyproject():
    """requirements.lock (used by the image) holds an exact version of every dependency pyproject
    names (torch apart: installed first from its own index), each allowed by pyproject's range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for spec in map(Requirement, project["dependencies"]):
        if spec.name == "torch":
            assert "torch" not in pins
            continue
        assert canonicalize_name(spec.name) in pins, f"{spec.name} is not in requirements.lock: run `make lock`"
        assert pins[canonicalize_name(spec.name)] in spec.specifier, (spec, pins[canonicalize_name(spec.name)])


def test_the_entrypoint_serves_with_a_token_and_passes_the_healthcheck(trained_ws, tmp_path):
    port = free_port()  # added to the command as `docker run IMAGE --port P` would; 8000 may be taken here
    check = [arg.replace(":8000/", f":{port}/") for arg in healthcheck()]
    check[0] = sys.executable
    env = container_env(trained_ws.home, TOKEN)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*entrypoint(), "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: subprocess.run(check, env=env, capture_output=True).returncode == 0, proc, log,
                   "the container's command", seconds=180)
        assert f"at http://0.0.0.0:{port}" in log.read_text() and "bearer token required" in log.read_text()
        wrong = subprocess.run(check, env=env | {TOKEN_ENV: "wrong"}, capture_output=True, text=True)
        assert wrong.returncode != 0 and "403" in wrong.stderr
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        # uvicorn shuts down cleanly, then re-raises the signal (older versions exit 0)
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "Application shutdown complete" in log.read_text()
    finally:
        stop(proc)
