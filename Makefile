# tastyrec: `make run` (install, build everything, start the service and app) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export TASTYREC_HOME ?= $(CURDIR)/.tastyrec
# Nothing may reach the network: Feast usage reporting and MLflow telemetry stay off.
export FEAST_USAGE := False
export MLFLOW_ENABLE_TELEMETRY := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install run test image screenshot lock clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The pipeline (an existing warehouse is reused), then the Streamlit app in the background and
# the REST service in the foreground; each prints its URL. Ctrl-C stops both, and make ends with a
# "stopped" line and status 0. With job control (set -m) each runs in a process group of its own
# and the service's holds the terminal: Ctrl-C reaches the service only, not make (which would
# report "Error 130" or "Interrupt"); the app is stopped once the service has ended, however it
# ended. Without a terminal there is no job control: a signal to them all ends the shell too,
# whose exit stops the app.
run: install
	$(BIN)/tastyrec pipeline
	@set -m 2>/dev/null; $(BIN)/tastyrec app & app=$$!; \
	trap 'kill $$app 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/tastyrec serve; status=$$?; \
	kill $$app 2>/dev/null; wait $$app; \
	case $$status in 0|130) echo "stopped: the service and the app";; *) exit $$status;; esac

# The app's browser test drives Debian's Chromium (Playwright cannot download a browser here);
# the Redis online store tests start Debian's redis-server themselves (nothing runs as a service);
# the image and compose tests build and run containers with Debian's podman (daemonless: runc,
# buildah; mmdebstrap makes the base image; uidmap and slirp4netns for podman without root; the
# dnsname CNI plugin lets compose's services find each other by name).
CHROMIUM := /usr/bin/chromium
REDIS    := /usr/bin/redis-server
PODMAN   := /usr/bin/podman /usr/bin/podman-compose /usr/bin/mmdebstrap /usr/lib/cni/dnsname
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM) $(REDIS) $(PODMAN) &:
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		chromium chromium-driver fonts-liberation redis-server \
		podman buildah runc mmdebstrap uidmap slirp4netns podman-compose \
		golang-github-containernetworking-plugin-dnsname

test: install $(CHROMIUM) $(REDIS) $(PODMAN)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The service's container image, localhost/tastyrec:latest, on a Debian bookworm base built here
# (localhost/tastyrec-base:bookworm): docker where its daemon answers, podman otherwise; the layers
# are cached, and the build's pip uses this machine's pip settings without keeping them in the image.
image: $(PODMAN)
	container/build.sh

# Refresh the README's screenshot, docs/app.png: the browser test saves it there only when asked
# (TASTYREC_SCREENSHOT); `make test` writes it to a temporary folder and leaves the checkout clean.
screenshot: install $(CHROMIUM)
	TASTYREC_SCREENSHOT=$(CURDIR)/docs/app.png $(BIN)/python -m pytest tests/test_app.py -k test_browser_flow

# Regenerate requirements.lock (the container's exact versions) after a dependency change: a fresh
# venv gets torch (pinned, left out of the lock) and tastyrec's runtime dependencies, then freezes.
LOCK_VENV := $(CURDIR)/.lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet torch==2.13.0 && $(LOCK_VENV)/bin/pip install --quiet .
	{ sed -n '1,3p' requirements.lock; $(LOCK_VENV)/bin/pip freeze --exclude tastyrec | grep -v '^torch=='; } \
		> requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) .tastyrec
