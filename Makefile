# Developer and CI entry points. GNU make, bash.
#
#   make test      ruff + mypy + pytest on PYTEST_WORKERS processes (2; 0 runs it in this
#                  one), PYTEST_ARGS="-k foo -x" to narrow
#   make servers   locate (and, as root with apt, install) redis-server and PostgreSQL
#   make demo      run the demo command
#   make bench     run the hit-path benchmark
#   make dist      build the wheels of the core and of every plugin into dist/

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Plugin distributions live in plugins/<name>/ with their own pyproject.toml; every one
# found is installed editable next to the core, in the same pip run so that they resolve
# against the local core rather than a published one. Override to install a subset.
PLUGINS ?= $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml))
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each with its own servers; whole files go to one process.
PYTEST_WORKERS ?= 2

.PHONY: venv servers test lint typecheck demo bench dist clean

venv: $(STAMP)

# Re-installs whenever a pyproject.toml (core or plugin) is newer than the stamp.
$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]' $(foreach p,$(PLUGINS),-e './$(p)')
	touch $@

servers: venv
	$(BIN)/python -m thorbis_cache.testing.binaries ensure

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

test: venv servers
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: venv servers
	$(BIN)/thorbis-cache demo

bench: venv servers
	$(BIN)/python bench/hit_path.py

# Each wheel is built from a clean copy (tools/build_wheels.py): nothing is left in the
# tree, and a setuptools warning fails the build.
dist: venv
	$(BIN)/python tools/build_wheels.py --strict --out dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info core/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
