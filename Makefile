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

.PHONY: install run test clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/tastyrec pipeline

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .tastyrec
