# Two entry points for a fresh machine; each creates and reuses .venv.
#   make run    the main job: train, compare, save, reload, predict
#   make test   the test suite (fast; `make test-all` adds slow tests)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

.PHONY: run test test-all lint format benchmark approximation
run: $(VENV)/installed
	$(PY) tools/quickstart.py

test: $(VENV)/installed
	$(PY) -m pytest -q

test-all: $(VENV)/installed
	$(PY) -m pytest -q --run-slow

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
