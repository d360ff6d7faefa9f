# Every target sets up .venv first (a few seconds when nothing changed): see tools/setup_env.sh.
PYTHON := .venv/bin/python

.PHONY: setup test lint format

setup:
	@bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: setup
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
