# The verbs people use. Every target sets up .venv first, so `make report`
# and `make test` work on a fresh machine that has only python3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
QP     := $(VENV)/bin/quarterpanic
STAMP  := $(VENV)/.installed

.PHONY: setup report test test-stats test-fast lab sample validate bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

## report: run the whole suite on the bundled sample into reports/latest/
report: $(STAMP)
	$(QP) run --out reports

# One BLAS thread per worker: two xdist workers on two cores must not oversubscribe.
PYTEST := OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q

## test: the test suite (unit, notebooks, browser) without the long statistical runs; under 5 minutes on 2 cores
test: $(STAMP)
	$(PYTEST) -m "not stats and not sweep"

## test-stats: the long runs: statistics over many seeds against the generator's truth, and the long sweeps
## (cache faults, stop signals, a small benchmark run); CI runs them after `make test`
test-stats: $(STAMP)
	$(PYTEST) -m "stats or sweep"

## test-fast: unit tests only, for the edit-run loop
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## lab: JupyterLab on notebooks/ with quarterpanic importable
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

## sample: regenerate the bundled sample CRM in salesdata/
sample: $(STAMP)
	$(QP) sample --out salesdata --seed 2026 --scale default

## validate: check every row of the bundled sample
validate: $(STAMP)
	$(QP) validate salesdata

## bench: speed and memory ratios against side-by-side baselines
bench: $(STAMP)
	$(PY) benchmarks/bench.py --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) reports .cache
