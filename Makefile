# Retain: two commands on a fresh clone.
#   make demo   create .venv, install, run the end-to-end demo
#   make test   create .venv, install with dev extras, run ruff, mypy and the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest test-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/retain demo $(DEMO_ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite once more against the local PostgreSQL (what .ci/run does after `make test`).
test-postgres: $(STAMP)
	RETAIN_DATABASE_URL=$${RETAIN_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/coverage.py

clean:
	rm -rf $(VENV) demo-output outbox retain.db .pytest_cache .mypy_cache .ruff_cache
