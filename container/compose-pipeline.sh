#!/bin/sh
# compose.yaml's one-shot `pipeline` service: builds the shared workspace once, then exits 0 so
# that `serve` and `app` start (depends_on: service_completed_successfully).
#
#   waits for Redis and the tracking server (compose starts them together; nothing to wait with
#   on podman < 4.6, where podman-compose ignores `service_healthy`),
#   then, unless the tracking server already has a champion (a second `up` on the same volumes):
#   tastyrec setup (TASTYREC_CUSTOMERS synthetic customers, an existing warehouse is kept)
#   -> features into Redis (the workspace remembers it) -> train (TASTYREC_TRAIN_ARGS), which
#   evaluates and registers on the tracking server. That is `tastyrec pipeline` with the online
#   store in Redis.
set -eu

python - <<'PY'
import os, socket, time, urllib.request
from urllib.parse import urlsplit

deadline = time.monotonic() + float(os.environ.get("TASTYREC_WAIT_S", "180"))
redis = urlsplit(os.environ["TASTYREC_ONLINE_STORE"])
mlflow = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/health"
for what, ready in [(f"Redis at {redis.hostname}:{redis.port}",
                     lambda: socket.create_connection((redis.hostname, redis.port), timeout=2).close()),
                    (f"the tracking server at {mlflow}", lambda: urllib.request.urlopen(mlflow, timeout=2).close())]:
    while True:
        try:
            ready()
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} does not answer: {e}")
            time.sleep(1)
    print(f"{what} answers", flush=True)
PY

if tastyrec registry show champion >/dev/null 2>&1; then
    echo "the tracking server has a champion already: nothing to build (\`down -v\` starts over)"
    exit 0
fi
if [ ! -e "$TASTYREC_HOME/warehouse.duckdb" ]; then
    tastyrec setup --customers "${TASTYREC_CUSTOMERS:-20000}"
fi
tastyrec features --online-store "$TASTYREC_ONLINE_STORE"
# shellcheck disable=SC2086  # TASTYREC_TRAIN_ARGS is a list of options
tastyrec train ${TASTYREC_TRAIN_ARGS:-}
