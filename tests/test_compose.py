"""compose.yaml's team stack, brought up for real with podman-compose on the images `make image`
builds (and Redis' image from container/redis.Containerfile): the one-shot pipeline runs first
(small data), then the service (2 workers) answers with the token and recommends, the model is
registered on the tracking server, the online store is in Redis, the app answers; `down -v`
leaves nothing of the project behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from podman import ENV, ROOT, build_image, podman
from servers import free_port

from tastyrec.registry.tracking import MODEL_NAME

PROJECT = "tastyrec-compose-test"  # not the file's own name: a stack someone runs by hand is left alone
TOKEN = "compose-test-token-0123456789"
CUSTOMERS = [3, 17, 42]
REDIS_IMAGE = "localhost/tastyrec-redis:bookworm"


def compose(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`podman-compose -p PROJECT ARGS` with the project's podman settings and the test's ports."""
    binary = Path(sys.executable).with_name("podman-compose")  # PyPI's (the dev extras), not Debian's 1.0.3
    return subprocess.run([str(binary), "-f", str(ROOT / "compose.yaml"), "-p", PROJECT, *args], cwd=ROOT,
                          env=Stack.env, capture_output=True, text=True, timeout=timeout)


def leftovers() -> dict[str, list[str]]:
    """Everything of the project podman still has: containers, pods, networks, volumes."""
    label = f"label=io.podman.compose.project={PROJECT}"
    lists = {"containers": podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout,
             "pods": podman("pod", "ls", "--format", "{{.Name}}").stdout,
             "networks": podman("network", "ls", "--format", "{{.Name}}").stdout,
             "volumes": podman("volume", "ls", "--format", "{{.Name}}").stdout}
    return {kind: [n for n in text.split() if kind == "containers" or PROJECT in n] for kind, text in lists.items()}


class Stack:
    env: dict[str, str] = {}
    ports: dict[str, int] = {}
    up_s = 0.0


@pytest.fixture(scope="module")
def stack():
    build_image()
    podman("build", "-f", str(ROOT / "container" / "redis.Containerfile"), "-t", REDIS_IMAGE, str(ROOT / "container"))
    Stack.ports = {name: free_port() for name in ("SERVE", "APP", "MLFLOW", "REDIS")}
    Stack.env = {**ENV, "TASTYREC_API_TOKEN": TOKEN, "TASTYREC_BIND": "127.0.0.1", "TASTYREC_CUSTOMERS": "400",
                 "TASTYREC_TRAIN_ARGS": "--epochs 1 --seed-samples 0",
                 **{f"TASTYREC_{name}_PORT": str(port) for name, port in Stack.ports.items()}}
    compose("down", "-v", timeout=300)  # what an interrupted earlier run left
    started = time.monotonic()
    up = compose("up", "-d")
    Stack.up_s = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Stack
    finally:
        compose("down", "-v", timeout=300)


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def wait_for(url: str, seconds: float = 180, **kw) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = httpx.get(url, timeout=5, **kw)
            if answer.status_code == 200 or time.monotonic() > deadline:
                return answer
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def test_the_team_stack_comes_up_answers_and_goes_away(stack):
    # The one-shot built the workspace and ended with 0. (podman starts it once more when it
    # starts `serve`, which `--requires` it: that run finds the champion and ends at once.)
    podman("wait", container("pipeline"), timeout=300)
    pipeline = json.loads(podman("inspect", container("pipeline")).stdout)[0]["State"]
    logs = podman("logs", container("pipeline"))
    logs = logs.stdout + logs.stderr
    assert pipeline["Status"] == "exited" and pipeline["ExitCode"] == 0, logs[-3000:]
    assert "is the first champion: promoted" in logs, logs[-3000:]

    base = f"http://127.0.0.1:{stack.ports['SERVE']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    health = wait_for(f"{base}/health", headers=auth)
    assert health.status_code == 200, health.text + podman("logs", container("serve")).stderr[-3000:]
    assert httpx.get(f"{base}/health").status_code == 401
    assert health.json()["version"] == 1 and health.json()["model"] == MODEL_NAME
    answer = httpx.post(f"{base}/recommendations", headers=auth, json={"customer_ids": CUSTOMERS, "top_k": 3},
                        timeout=60)
    assert answer.status_code == 200, answer.text
    assert [c["customer_id"] for c in answer.json()["customers"]] == CUSTOMERS
    assert all(len(c["recommendations"]) == 3 for c in answer.json()["customers"])
    # two uvicorn workers under the server process
    processes = podman("top", container("serve"), "args").stdout.splitlines()[1:]
    assert sum("spawn_main" in p for p in processes) == 2, processes

    # the model is registered on the tracking server (through its REST API, as a client sees it)
    mlflow = f"http://127.0.0.1:{stack.ports['MLFLOW']}/api/2.0/mlflow"
    champion = httpx.get(f"{mlflow}/registered-models/alias", params={"name": MODEL_NAME, "alias": "champion"})
    assert champion.status_code == 200, champion.text
    assert champion.json()["model_version"]["version"] == "1"
    # registered before the service started: it waited for the one-shot
    serve_started = podman("inspect", "--format", "{{.State.StartedAt.Unix}}", container("serve")).stdout
    assert champion.json()["model_version"]["creation_timestamp"] / 1000 < int(serve_started)
    run = httpx.get(f"{mlflow}/runs/get", params={"run_id": champion.json()["model_version"]["run_id"]}).json()
    assert run["run"]["info"]["status"] == "FINISHED"

    # the features are in Redis, and the workspace says so
    import redis

    assert redis.Redis(port=stack.ports["REDIS"]).dbsize() > 400  # the customers and items
    settings = podman("exec", container("serve"), "cat", "/home/tastyrec/workspace/settings.json").stdout
    assert json.loads(settings)["online_store"] == "redis://redis:6379/0"

    app = wait_for(f"http://127.0.0.1:{stack.ports['APP']}/_stcore/health")
    assert app.status_code == 200 and app.text == "ok", podman("logs", container("app")).stderr[-3000:]
    assert httpx.get(f"http://127.0.0.1:{stack.ports['APP']}/").status_code == 200
    print(f"up -d (pipeline at 400 customers, 1 epoch, then serve and app started): {stack.up_s:.0f} s")

    down = compose("down", "-v", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert leftovers() == {"containers": [], "pods": [], "networks": [], "volumes": []}
