# The README names these targets. `make serve` and `make test` set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build this project tests with (an unpinned torch pulls CUDA).
TORCH ?= torch==2.13.0
# llama-cpp-python compiles llama.cpp from its sdist: only the library, with every core.
export CMAKE_ARGS ?= -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: setup browser serve test test-fast lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

serve: setup
	$(VENV)/bin/tuneforge serve

# The dashboard's browser tests drive Debian's Chromium; Playwright never downloads one.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Two test processes (pytest-xdist), each module on one of them; every training runs on one
# thread (tests/conftest.py), so the two fill both cores. The 25 slowest are listed at the end.
test: setup browser
	$(PY) -m pytest -ra -n 2 --dist loadfile --durations=25

test-fast: setup
	$(PY) -m pytest -ra -n 2 -m "not slow"

lint: setup
	$(VENV)/bin/ruff check tuneforge tests bench
	$(VENV)/bin/mypy tuneforge

# The training benchmarks (bench/README.md), each a few minutes on two CPU cores; e.g.
# `make bench BENCH_ARGS="--rounds 1 --quiet-wait 0"` for a quicker, rougher look.
BENCH_ARGS ?=
bench: setup
	$(PY) bench/embedding_overhead.py $(BENCH_ARGS)
	$(PY) bench/supervised_lora.py $(BENCH_ARGS)
	$(PY) bench/classification.py $(BENCH_ARGS)
