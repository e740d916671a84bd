# The two set-up commands of the README. Both install into the current Python interpreter.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install demo test lint bench

install:
	$(PIP) install -q -c constraints.txt -e ".[dev]"

demo: install
	layerscope analyze

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	ruff check src tests benchmarks

bench: install
	$(PYTHON) benchmarks/bench_probe.py
