# The two commands a newcomer runs: `make demo` and `make test`. Both set everything up first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# pytest workers: both cores by default; `make test JOBS=1` for a serial run. -rs prints why a test skipped (a
# missing browser or Galaxy tool, say; under CI those tests fail instead).
JOBS ?= 2

.PHONY: setup demo test bench galaxy clean

setup:
	@scripts/bootstrap.sh

demo: setup
	@scripts/demo.sh

test: setup
	@$(PY) -m ruff check --quiet .
	@$(PY) -m pytest -n $(JOBS) -q -rs tests

bench: setup
	@$(PY) -m benchmarks.run_all

# the plugin as Galaxy tools in galaxy-tools/, linted (tests/test_galaxy.py checks the same in `make test`)
galaxy: setup
	@scripts/galaxy.sh

clean:
	rm -rf $(VENV) .venv-galaxy galaxy-tools demo-output build *.egg-info .pytest_cache
