# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench

$(VENV)/.dev-installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "weirflow needs Python 3.11+; run make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	touch $@

$(VENV)/.demo-installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "weirflow needs Python 3.11+; run make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(VENV)/.demo-installed
	$(VENV)/bin/weirflow demo flights --chaos 3 --plot flights.png

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check src tests benchmarks examples

# Two test files at a time: most of the suite's time is chaos and cluster tests that wait
# on restarts and throttled input, not on the CPU. Files, not tests, are spread, so that a
# module's fixture (an ingested event log, one chaos run checked by several tests) runs once.
test: $(VENV)/.dev-installed lint
	$(PY) -m pytest -n 2 --dist loadfile tests

# Quick mode (< 10 min): each benchmark prints its own table, then one table of all results.
bench: $(VENV)/.dev-installed
	$(PY) benchmarks/eventlog.py --quick
	$(PY) benchmarks/windowed_count.py --quick --peers --latency --json benchmarks/results/windowed_count.json
	$(PY) benchmarks/nexmark/run.py --quick --json benchmarks/results/nexmark.json
	$(PY) benchmarks/scaling.py --quick --json benchmarks/results/scaling.json
	$(PY) benchmarks/peers/summary.py --windowed-count benchmarks/results/windowed_count.json --nexmark benchmarks/results/nexmark.json --scaling benchmarks/results/scaling.json
