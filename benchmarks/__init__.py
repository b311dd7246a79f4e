"""overlaynet benchmark suite: `python -m benchmarks --help` (or `make bench` / `make bench-quick`).

Every figure comes from the run that reports it; a case that cannot run says why in the table.
"""
