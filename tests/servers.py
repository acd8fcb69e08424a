"""Free loopback ports, and the servers tests start themselves on them: redis-server (the Redis
online store) and `mlflow server` (a team's tracking server). Each is stopped by the fixture that
starts it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, proc: subprocess.Popen, log: Path, what: str, seconds: float = 120) -> None:
    """Poll `ready()` until it is true; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{what} did not answer in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow server runs uvicorn and job runners under it),
    then SIGKILL to whatever of the group is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone
    proc.wait()


class RedisServer:
    """A redis-server on 127.0.0.1 with no persistence (Debian's package; `make test` installs it)."""

    def __init__(self, folder: Path):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: `make test` installs the Debian package redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / f"redis-{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(folder)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.ping, self.proc, self.log, "redis-server")

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())

    def stop(self) -> None:
        stop(self.proc)


class MlflowServer:
    """`mlflow server` on 127.0.0.1: a SQLite backend and an artifact folder in `folder`,
    artifacts proxied (clients never see the folder's path)."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"mlflow-{self.port}.log"
        self.artifacts = folder / "artifacts"
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                 "--artifacts-destination", str(self.artifacts), "--serve-artifacts"],
                stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
        wait_until(lambda: httpx.get(f"{self.url}/health", timeout=2).status_code == 200, self.proc, self.log,
                   "mlflow server", seconds=180)

    def stop(self) -> None:
        stop(self.proc)
