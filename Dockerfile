# tastyrec's REST service: `tastyrec serve` on 0.0.0.0:8000, a bearer token required.
#
#   make image                          # podman (or docker where its daemon runs): see container/build.sh
#   docker build -t tastyrec .          # plain docker, PyPI and the PyTorch CPU index reachable
#   docker run --rm -p 8000:8000 -e TASTYREC_API_TOKEN="$TOKEN" \
#       -v "$PWD/.tastyrec:$PWD/.tastyrec:ro" -e TASTYREC_HOME="$PWD/.tastyrec" tastyrec
#
# Arguments after the image name are added to the command (`... tastyrec --workers 2`); other
# commands run with `--entrypoint tastyrec` (`docker run --entrypoint tastyrec tastyrec pipeline`).
#
# The image holds no data: it serves a home built outside it by `tastyrec pipeline`. Mount that
# home at the same absolute path it has where it was built: mlflow.db records the model's
# artifacts as absolute file URIs of that machine, and they must resolve in the container too
# (Feast's feature_store.yaml holds relative paths, so Feast alone would not care). A home whose
# registry is a tracking server has no such paths. The service only reads the home, so it can be
# mounted read-only (`:ro`); the container's user (uid 1000) must be able to read its files.
#
# Build arguments:
#   BASE_IMAGE   an image whose `python` is Python 3.11 with the venv module (tastyrec needs 3.11).
#                `make image` passes localhost/tastyrec-base:bookworm, built from Debian packages.
#   TORCH_INDEX  where the torch wheel comes from: PyTorch's CPU index by default; empty: the index
#                of the pip settings (below), e.g. where a local CPU wheel is among their find-links.
#                For NVIDIA GPUs, a CUDA index that has this torch version, e.g.
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
#                (CUDA wheels bring their own CUDA libraries, so the slim base works with
#                `docker run --gpus all`); BASE_IMAGE can then be a CUDA image to which
#                Python 3.11 was added.
#   The default base is pinned by digest (what `python:3.11-slim` named when it was taken from
#   public Dockerfiles on 2026-12-02; this project's machines cannot reach Docker Hub to check it):
#   refresh it with `docker buildx imagetools inspect python:3.11-slim`, or pass another base.
# Pip settings (a private index, a proxy's CA) reach pip as build secrets, never a layer:
#   --secret id=pip.conf,src=my-pip.conf   read as /etc/pip.conf
#   --secret id=pip-cert,src=my-ca.pem     a CA bundle; the pip.conf then says cert = /run/secrets/pip-cert
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# ---- builder: a venv with torch, the locked dependencies and tastyrec's wheel --------------------
FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/tastyrec
ENV PATH=/opt/tastyrec/bin:$PATH

# torch first, in its own layer: pyproject pins the same version, which the CPU (or CUDA) build
# then satisfies, so the dependencies do not fetch PyPI's CUDA build.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \
    python -m pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}

# Then every other dependency at the exact version of requirements.lock (reproducible, and a
# layer of its own that a code change does not rebuild), then tastyrec's own wheel.
WORKDIR /src
COPY requirements.lock ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \
    python -m pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \
    python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the image: the base, the venv, tastyrec; no sources, wheels, pip caches or settings ----------
FROM ${BASE_IMAGE}
# Nothing may reach the network: Feast usage reporting and MLflow telemetry stay off (as in the Makefile).
ENV FEAST_USAGE=False \
    MLFLOW_ENABLE_TELEMETRY=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tastyrec/bin:$PATH
RUN useradd --create-home --uid 1000 tastyrec
# The venv is one layer, rebuilt when torch or requirements.lock change; a code change only
# replaces the small wheel below (installed without resolving: --no-deps).
COPY --from=builder /opt/tastyrec /opt/tastyrec
COPY --from=builder /wheels /tmp/wheels
RUN python -m pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels

USER tastyrec
WORKDIR /home/tastyrec

EXPOSE 8000
# /health needs the token too; the port is the one below (map another with `-p`, not `--port`).
HEALTHCHECK --start-period=120s CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8000/health', headers={'Authorization': 'Bearer ' + os.environ['TASTYREC_API_TOKEN']}), timeout=10)"]
ENTRYPOINT ["tastyrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
