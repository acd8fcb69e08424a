#!/usr/bin/env bash
# `make image`: build tastyrec's images, with docker where a docker daemon answers and with podman
# (daemonless) otherwise.
#   1. the base, localhost/tastyrec-base:bookworm: Debian bookworm's python3 (3.11), python3-venv and
#      ca-certificates, made by mmdebstrap --variant=minbase and imported (no registry needed), with
#      a venv on PATH so `python -m pip` works in it. Built once; TASTYREC_REBUILD_BASE=1 redoes it.
#   2. the app, localhost/tastyrec:latest, from the Dockerfile on that base. Layers are cached: a
#      rebuild after a code change rebuilds tastyrec's own small wheel only.
# The build's pip uses this machine's pip settings (index, proxy CA, local wheels: see
# container/pip_settings.py) through build secrets and read-only mounts, never written into the image.
# TORCH_INDEX (the Dockerfile's build argument) is passed on when set; left unset, and the pinned torch
# lies among the local wheels pip is told of, it is installed from there rather than the PyTorch index.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=${TASTYREC_BASE_IMAGE:-localhost/tastyrec-base:bookworm}
image=${TASTYREC_IMAGE:-localhost/tastyrec:latest}

if [ -z "${TASTYREC_ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then TASTYREC_ENGINE=docker; else TASTYREC_ENGINE=podman; fi
fi
engine=$TASTYREC_ENGINE
if [ "$engine" = podman ]; then
    # shellcheck source=container/podman-env.sh
    . "$root/container/podman-env.sh"
fi

if [ -n "${TASTYREC_REBUILD_BASE:-}" ] || ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    echo "building the base image $base (mmdebstrap, Debian bookworm)" >&2
    debian=http://deb.debian.org/debian
    mmdebstrap --variant=minbase --mode="$( [ "$(id -u)" = 0 ] && echo root || echo unshare )" \
        --include=python3,python3-venv,ca-certificates,passwd \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
        bookworm - "deb $debian bookworm main" "deb $debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" \
    | "$engine" import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python"]' - "$base" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--build-arg "BASE_IMAGE=$base" --secret "id=pip.conf,src=$work/pip.conf")
torch=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' "$root/pyproject.toml")
local_torch=
while read -r kind path; do
    case $kind in
        cert) args+=(--secret "id=pip-cert,src=$path") ;;
        mount)
            if [ "$engine" = podman ]; then args+=(--volume "$path:$path:ro")
            else echo "note: docker cannot mount $path into the build; pip goes without it" >&2; continue; fi
            compgen -G "$path/torch-$torch[-+]*.whl" >/dev/null && local_torch=yes ;;
    esac
done < <(python3 "$root/container/pip_settings.py" "$work/pip.conf")
if [ -n "${TORCH_INDEX+set}" ]; then
    args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
elif [ -n "$local_torch" ]; then
    args+=(--build-arg "TORCH_INDEX=")  # the pip settings' index and the local torch wheel
fi

if [ "$engine" = podman ]; then
    # docker format: OCI images have no HEALTHCHECK; the host's network reaches the index as pip does here
    args+=(--format docker --network host --layers)
else
    export DOCKER_BUILDKIT=1  # build secrets
fi
"$engine" build "${args[@]}" --tag "$image" "$root"
