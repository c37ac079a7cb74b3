# One command set for people and CI. `make demo` and `make test` do all their own set-up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench-scan clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[serve,build,test,dev,torch,scan]'
	touch $(STAMP)

install: $(STAMP)

# The main job end to end on embedded defaults: build real models and attack samples, scan them.
demo: $(STAMP)
	$(BIN)/python -m modelcrate.demo

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

# Side-by-side scanner benchmark against modelscan, picklescan and fickling (own venvs).
bench-scan: $(STAMP)
	$(BIN)/python benchmarks/scan/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
