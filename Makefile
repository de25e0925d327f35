# One venv, installed once; re-installed only when pyproject.toml changes.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
# Tests run in two processes (one per core); each pins torch to one thread.
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: setup test lint demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check rcnn_cli tests

demo: setup
	$(VENV)/bin/rcnn demo

clean:
	rm -rf build dist *.egg-info .pytest_cache
