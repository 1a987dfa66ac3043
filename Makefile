# The two commands a newcomer runs: `make demo` and `make test`. Both set everything up first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# pytest workers: both cores by default; `make test JOBS=1` for a serial run. -rs prints why a test skipped (a
# missing browser or Galaxy tool, say; under CI those tests fail instead).
JOBS ?= 2

.PHONY: setup demo test bench heldout heldout-select heldout-full galaxy encoder base clean

setup:
	@scripts/bootstrap.sh

demo: setup
	@scripts/demo.sh

test: setup
	@$(PY) -m ruff check --quiet .
	@$(PY) -m pytest -n $(JOBS) -q -rs tests

bench: setup
	@$(PY) -m benchmarks.run_all

# held-out benchmark over the studies in ../shared/data -> benchmarks/results/heldout/, docs/science.md (the AAM
# epoch budget and the rest: python -m benchmarks.heldout --help; e.g. make heldout HELDOUT_ARGS="--tasks ecam-month")
HELDOUT_ARGS ?=
heldout: setup
	@$(PY) -m benchmarks.heldout --jobs 2 $(HELDOUT_ARGS)

# the heavy part of the held-out benchmark -> benchmarks/results/heldout-full/: American Gut in-study tasks, the
# cross-study tasks, 3 repeats of grouped 5-fold CV of the default, rf500-rel and the best classical baseline. Every
# step is resumable (--resume keeps each finished task-fold in <out>/cache/; the cross-study tasks are kept by their
# inputs): run it again after an interruption. Then `python -m benchmarks.heldout --report-only` puts it in the docs.
FULL := benchmarks/results/heldout-full
FULL_MODELS ?= constant depth rf500 rf500-rel clr-linear et100
# the cross-study rows: the forests and the constant, and today's per-study default fit on the whole source study
# (its pretraining on American Gut takes about 45 min a source; kept in $(FULL)/cache/fits/, resumed by epoch)
CROSS_MODELS ?= rf500-genus rf500-seq100 constant aam+rf-axes-1se aam
REPEAT_MODELS ?= aam+rf-axes-1se rf500-rel best-classical
heldout-full: setup
	$(PY) -m benchmarks.heldout --full --resume --tasks ag-ibd ag-age --models $(FULL_MODELS) --out $(FULL) --jobs 2 \
		--no-docs $(HELDOUT_ARGS)
	$(PY) -m benchmarks.heldout_cross --out $(FULL) --models $(CROSS_MODELS)
	for seed in 1 2 3; do $(PY) -m benchmarks.heldout --resume --seed $$seed --models $(REPEAT_MODELS) \
		--out $(FULL)/repeat-$$seed --jobs 2 --no-docs $(HELDOUT_ARGS) || exit 1; done
	$(PY) -m benchmarks.heldout --report-only

# nested selection of a default among <= 3 recipes by grouped inner CV on each training fold (held-out folds never
# read); resumable: each task-fold's inner scores are cached in benchmarks/results/heldout/select/
SELECT ?= aam+rf-axes-1se rf500-rel+aam rf500-rel
heldout-select: setup
	@$(PY) -m benchmarks.heldout --select $(SELECT) $(HELDOUT_ARGS)

# the plugin as Galaxy tools in galaxy-tools/, linted (tests/test_galaxy.py checks the same in `make test`)
galaxy: setup
	@scripts/galaxy.sh

# Rebuild the shipped reference encoder (aam/assets/encoders/$(ENCODER_NAME)) from Greengenes 13_8: pretraining on one
# core (about 2 hours on a shared 2-core machine), held-out evaluation, export with checksums. Resumes an
# interrupted run. qiime-default-reference (35 MB, CC BY-SA 3.0) is a build-time dependency only.
ENCODER_NAME ?= gg13_8-v4-d64
ENCODER_RUN ?= encoder-run/gg13_8-v4

encoder: setup
	@$(PY) -c 'import qiime_default_reference' 2>/dev/null || \
		$(PY) -m pip install --disable-pip-version-check -q "qiime-default-reference>=0.1.3"
	OMP_NUM_THREADS=1 nice -n 10 $(PY) -m aam.reference.pretrain --out $(ENCODER_RUN) --threads 1 \
		$$([ -f $(ENCODER_RUN)/checkpoint.pt ] && echo --resume)
	OMP_NUM_THREADS=1 nice -n 10 $(PY) -m aam.reference.evaluate --run $(ENCODER_RUN) --threads 1
	$(PY) -m aam.reference.export --run $(ENCODER_RUN) --name $(ENCODER_NAME)

# Build the shipped sample-level base (aam/assets/bases/$(BASE_NAME)) from American Gut + PGP in ../shared/data
# (read there, never copied): pretraining of the sample level over the frozen reference encoder, UniFrac per batch
# from the tree, random read truncations (python -m aam.base.pretrain --help), then export with checksums and the
# model card. Resumes an interrupted run; progress lines, TensorBoard logs and history.tsv in $(BASE_RUN).
# e.g. make base BASE_ARGS="--epochs 5 --max-samples 400 60" for a pilot.
BASE_NAME ?= ag-pgp-v4
BASE_RUN ?= base-run/$(BASE_NAME)
BASE_ARGS ?=

base: setup
	OMP_NUM_THREADS=2 nice -n 10 $(PY) -m aam.base.pretrain --out $(BASE_RUN) --threads 2 \
		$$([ -f $(BASE_RUN)/checkpoints/last_checkpoint.pt ] && echo --resume) $(BASE_ARGS)
	$(PY) -m aam.base.export --run $(BASE_RUN) --name $(BASE_NAME) \
		$$([ -f benchmarks/results/base_yardstick.md ] && echo --measured benchmarks/results/base_yardstick.md)

clean:
	rm -rf $(VENV) .venv-galaxy galaxy-tools demo-output build *.egg-info .pytest_cache
