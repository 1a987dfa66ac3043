# The two commands a newcomer runs: `make demo` and `make test`. Both set everything up first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# pytest workers: both cores by default; `make test JOBS=1` for a serial run.
JOBS ?= 2

.PHONY: setup demo test bench heldout clean

setup:
	@scripts/bootstrap.sh

demo: setup
	@scripts/demo.sh

test: setup
	@$(PY) -m pytest -n $(JOBS) -q tests

bench: setup
	@$(PY) -m benchmarks.run_all

# held-out benchmark over the studies in ../shared/data -> benchmarks/results/heldout/, docs/science.md (the AAM
# epoch budget and the rest: python -m benchmarks.heldout --help; e.g. make heldout HELDOUT_ARGS="--tasks ecam-month")
HELDOUT_ARGS ?=
heldout: setup
	@$(PY) -m benchmarks.heldout --jobs 2 $(HELDOUT_ARGS)

clean:
	rm -rf $(VENV) demo-output build *.egg-info .pytest_cache
