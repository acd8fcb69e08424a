"""podman for the tests, as `make image` runs it: tastyrec's containers.conf (runc, ulimits this host
allows) and, as root, its own persistent store (/var/tmp/tastyrec-containers, so image layers are
cached between runs). Debian's podman is installed by `make test`.

    podman("ps", "-a")     podman with ENV, output captured, a failure raised with its output
    build_image()          `make image` with podman, once per test process and one at a time
                           across processes (xdist workers); returns IMAGE
    ENV                    the environment to run podman (or podman-compose) with
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/tastyrec:latest"
BASE_IMAGE = "localhost/tastyrec-base:bookworm"

# what container/podman-env.sh exports: settings already in the environment win
ENV = {"CONTAINERS_CONF": str(ROOT / "container" / "containers.conf")}
if os.getuid() == 0:
    ENV["CONTAINERS_STORAGE_CONF"] = str(ROOT / "container" / "storage.conf")
ENV = {**os.environ, **{k: os.environ.get(k, v) for k, v in ENV.items()}}

_built: list[str] = []


def binary() -> str:
    found = shutil.which("podman")
    if found is None:
        raise RuntimeError("podman is not installed: `make test` installs Debian's podman (and buildah, runc, "
                           "mmdebstrap, podman-compose)")
    return found


def podman(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """`podman ARGS` with ENV; stdout and stderr captured as text. `timeout` guards against a hang."""
    done = subprocess.run([binary(), *args], env=ENV, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}"
                           f"\n{done.stderr[-3000:]}")
    return done


def build_image() -> str:
    """Build the base (once per store) and the app image with container/build.sh (podman, layers
    cached: a rebuild with nothing changed takes seconds); once per test process, never two at once
    (a lock file: xdist workers may reach it together). Returns IMAGE."""
    if not _built:
        binary()
        with open(Path(tempfile.gettempdir()) / "tastyrec-image-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker's build: wait, then rebuild from its layers
            done = subprocess.run([str(ROOT / "container" / "build.sh")], env=ENV | {"TASTYREC_ENGINE": "podman"},
                                  capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"container/build.sh exited with {done.returncode}:\n{done.stdout[-3000:]}"
                               f"\n{done.stderr[-5000:]}")
        _built.append(IMAGE)
    return IMAGE
