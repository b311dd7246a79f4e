# overlaynet: `make demo` and `make test` work on a fresh machine; each installs what is missing.
PY := .venv/bin/python

.PHONY: setup demo test lint typecheck unit bench bench-quick clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m overlaynet.demo

lint: setup
	$(PY) -m ruff check overlaynet tests benchmarks

typecheck: setup
	$(PY) -m mypy overlaynet

test: setup lint typecheck
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest -m unit

bench: setup
	$(PY) -m benchmarks

bench-quick: setup
	$(PY) -m benchmarks --quick

clean:
	rm -rf build *.egg-info overlaynet/dataplane/*.so dataplane/*.c
