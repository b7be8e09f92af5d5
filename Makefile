# skybatch developer entry points. `make demo` and `make test` work on a fresh machine
# with Python 3.11: they create .venv, install skybatch with the pinned LSST
# middleware (constraints.txt), then run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-survey

.PHONY: install demo test lint typecheck unit bench clean-demo slurm-up slurm-down

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(BIN)/.installed

## Build the demo survey and run the two-step demo campaign over it (campaign manager).
demo: install
	$(BIN)/skybatch demo run $(DEMO_DIR)

## Lint, type-check and run the whole test suite (what CI runs).
test: install lint typecheck
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

bench: install
	$(BIN)/python benchmarks/demo_pipeline.py

clean-demo:
	rm -rf $(DEMO_DIR)

## A single-node Slurm on this machine (installs slurm-wlm + munge from Debian; root).
slurm-up:
	scripts/slurm/up.sh

slurm-down:
	scripts/slurm/down.sh
