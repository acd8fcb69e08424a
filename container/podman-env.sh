# Sourced by container/build.sh (tests/podman.py sets the same): podman with tastyrec's settings.
# Run `. container/podman-env.sh` to use podman by hand on the same images and containers.
_here=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$_here/containers.conf}
if [ "$(id -u)" = 0 ]; then  # rootless podman keeps its own store (~/.local/share/containers)
    export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$_here/storage.conf}
fi
unset _here
