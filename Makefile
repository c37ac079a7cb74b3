# One command set for people and CI. `make demo` and `make test` do all their own set-up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint typecheck unit bench-scan bench-image clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[serve,build,test,dev,torch,scan]'
	touch $(STAMP)

install: $(STAMP)

# podman, runc, skopeo, umoci, docker-registry, mmdebstrap: the container tests use the real tools.
system-deps:
	bash scripts/system-deps.sh

# The main job end to end on embedded defaults: train, scan, build a crate, serve it, query it.
demo: $(STAMP)
	$(BIN)/python -m modelcrate.demo

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

test: system-deps lint typecheck unit

# Side-by-side scanner benchmark against modelscan, picklescan and fickling (own venvs).
bench-scan: $(STAMP)
	$(BIN)/python benchmarks/scan/run.py

# The same over picklescan's and modelscan's own test files, from checkouts of them:
# make bench-scan-peers PICKLESCAN=DIR MODELSCAN=DIR (benchmarks/scan/README.md).
bench-scan-peers: $(STAMP)
	$(BIN)/python benchmarks/scan/run.py --peer-tests picklescan=$(PICKLESCAN) --peer-tests modelscan=$(MODELSCAN)

# Image size, cold/warm/code-only build time and bytes pushed (benchmarks/image/).
bench-image: $(STAMP) system-deps
	$(BIN)/python benchmarks/image/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
