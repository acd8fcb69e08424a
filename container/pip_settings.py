"""The host's pip settings, rewritten for an image build: `python3 pip_settings.py OUT.conf`
writes a pip.conf that the Dockerfile's pip reads as the build secret `pip.conf`, and prints
what the build must also see, one `KIND PATH` line each:

    cert PATH    the CA bundle pip is told to trust (the secret `pip-cert`; the conf names
                 /run/secrets/pip-cert, where the build finds it)
    mount PATH   a local file or folder the settings name (find-links, a file:// index, a
                 constraints file), bind-mounted read-only at the same path (podman only)

The settings are what `pip config list` shows (files and PIP_* variables, the variables last),
so the image is built with the index, proxy certificate and local wheels this machine's pip
uses, and none of it is written into a layer: secrets and build-time mounts are not committed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

# Settings that name local paths; the values of the others are copied as they are.
PATH_KEYS = {"find-links", "constraint", "requirement", "index-url", "extra-index-url"}


def host_settings() -> dict[str, str]:
    """key -> value as the host's pip resolves them (an environment variable wins over a file)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    listed = done.stdout if done.returncode == 0 else ""  # no pip here: PyPI, no settings
    files, env = {}, {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        scope, _, key = name.rpartition(".")
        if scope in (":env:", "global", "install") and key != "config-file":  # PIP_CONFIG_FILE: read already
            (env if scope == ":env:" else files)[key] = ast.literal_eval(value)
    return files | env


def local_path(value: str) -> Path | None:
    """The local path a setting's value names (a path or a file:// URL), if it names one."""
    path = urlsplit(value).path if value.startswith("file://") else value
    return Path(path) if path.startswith("/") else None


def main(out: Path) -> None:
    lines, needs = ["[global]"], []
    for key, value in sorted(host_settings().items()):
        if key == "cert":
            needs.append(f"cert {value}")
            value = "/run/secrets/pip-cert"
        elif key in PATH_KEYS:
            for part in value.split():
                path = local_path(part)
                if path is not None and path.exists():
                    # a file:// simple index links to files beside it: mount its parent too
                    needs.append(f"mount {path.parent if part.startswith('file://') else path}")
        lines.append(f"{key} = {value}")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(dict.fromkeys(needs)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
