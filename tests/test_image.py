"""The image built and run for real with podman (Debian's, installed by `make test`): `make image`'s
build (cached layers), a workspace made by the image itself without a network, then the service
container on it: /health with and without the token, one recommendation list equal to the engine's,
and a clean stop that leaves no container behind."""

from __future__ import annotations

import json
import os
import time
import uuid

import httpx
import pytest

from podman import build_image, podman
from servers import free_port
from tastyrec.config import Workspace
from tastyrec.service import HOME_ENV, TOKEN_ENV
from test_service import same

TOKEN = "image-token-8c2d"
LABEL = "tastyrec-test=test_image"  # every container this module starts, to check none is left


def owned_by_the_image_user(folder) -> None:
    """The image runs as uid 1000; the home it builds is a host folder that user must write."""
    if os.getuid() == 0:
        os.chown(folder, 1000, 1000)
    else:  # rootless: the container's uid 1000 is one of this user's subordinate ids
        podman("unshare", "chown", "1000:1000", str(folder))


def run_args(home, mode: str = "rw") -> list[str]:
    """The home mounted at its own absolute path (mlflow.db records artifacts by absolute path)."""
    return ["--label", LABEL, "--volume", f"{home}:{home}:{mode}", "--env", f"{HOME_ENV}={home}"]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def home(image, tmp_path_factory):
    """A workspace made by the image itself, with no network: 400 customers (seed 42), 2 epochs on
    2 DDP processes (torchrun in the container), no seed baseline (as conftest's trained_ws)."""
    home = tmp_path_factory.mktemp("image-home")
    owned_by_the_image_user(home)
    done = podman("run", "--rm", "--network", "none", *run_args(home), "--entrypoint", "tastyrec", image,
                  "pipeline", "--customers", "400", "--seed", "42", "--epochs", "2", "--nproc", "2",
                  "--seed-samples", "0", "--json", timeout=900)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["train"]["result"]["world_size"] == 2
    assert result["registry"]["version"] == 1 and result["registry"]["promoted"], result["registry"]
    return home


def test_the_image_serves_its_own_workspace_and_stops_cleanly(image, home) -> None:
    name = f"tastyrec-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman("run", "--detach", "--name", name, *run_args(home, "ro"), "--env", f"{TOKEN_ENV}={TOKEN}",
           "--publish", f"127.0.0.1:{port}:8000", image)
    try:
        deadline = time.monotonic() + 180
        # the image's own HEALTHCHECK (kept by --format docker), run by podman inside the container
        while podman("healthcheck", "run", name, check=False).returncode != 0:
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            assert state["Running"] and time.monotonic() < deadline, podman("logs", name).stderr[-3000:]
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/health", headers=auth, timeout=30).status_code == 200
        assert httpx.get(f"{url}/health", timeout=30).status_code == 401
        assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 403
        request = {"customer_ids": [3, 11, 42], "top_k": 5}
        served = httpx.post(f"{url}/recommendations", json=request, headers=auth, timeout=60)
        assert served.status_code == 200, served.text

        started = time.monotonic()
        podman("stop", "--time", "30", name)  # SIGTERM, as `docker stop`; SIGKILL after 30 s
        assert time.monotonic() - started < 30
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        # uvicorn shuts down cleanly, then re-raises SIGTERM: 128 + 15 (a SIGKILL would be 137)
        assert state["ExitCode"] in (0, 143), state
        logs = podman("logs", name)
        assert "Application shutdown complete" in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
    assert podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout.strip() == ""

    from tastyrec.recommend import Engine  # the engine on the same home, opened here after the stop

    engine = Engine(Workspace.from_env(home))
    assert served.json()["customers"]
    same(served.json(), engine.recommend(customer_ids=request["customer_ids"], top_k=request["top_k"]).to_dict())


def test_the_image_keeps_no_build_settings_sources_or_caches(image) -> None:
    """The build's pip settings were secrets and mounts: none is in the image, nor the sources,
    tastyrec's wheel or a pip cache; tastyrec is installed, the torch the host's settings offered."""
    script = ("test ! -e /etc/pip.conf && test ! -e /run/secrets/pip-cert && test ! -e /src && test ! -e /tmp/wheels"
              " && test ! -e /root/.cache/pip && test ! -e /home/tastyrec/.cache/pip"
              " && python -m pip config list && python -c 'import tastyrec, torch; print(torch.__version__)'")
    done = podman("run", "--rm", "--network", "none", "--label", LABEL, "--entrypoint", "sh", image, "-c", script,
                  check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["2.13.0+cpu"], done.stdout  # `pip config list` printed nothing
