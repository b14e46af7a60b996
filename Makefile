# Two commands matter: `make run` (set up and start p2pid) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP_TEST := $(STAMP)-test

# Files spread over two workers; PYTEST_ARGS="-p no:xdist" (or -n 0) runs them in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: run test lint typecheck bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/p2pid demo

system-deps:
	scripts/system-deps.sh

lint: $(STAMP_TEST)
	$(BIN)/ruff check p2pid tests bench
	$(BIN)/ruff format --check p2pid tests bench

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

test: system-deps $(STAMP_TEST) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
