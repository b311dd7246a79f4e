"""The benchmark harness still runs end to end and writes real numbers (no speed is asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.integration


def test_quickest_cases_write_real_numbers(prefix: str, tmp_path) -> None:
    run_prefix = (prefix + "bm")[:6]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--cases", "dataplane,micro", "--modes", "underlay,kernel-vxlan",
         "--mtus", "1500", "--repeats", "1", "--duration", "1", "--pings", "20", "--micro-number", "2000",
         "--micro-repeat", "2", "--out", str(tmp_path), "--no-update-docs", "--no-install",
         "--prefix", run_prefix],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = os.listdir(tmp_path)
    with open(tmp_path / run_dir / "results.json") as f:
        data = json.load(f)
    assert data["meta"]["machine"]["kernel"]
    figures = {(f["group"], f["case"], f["mode"], f["metric"]): f for f in data["figures"]}

    for mode in ("underlay", "kernel-vxlan"):
        for case, metric in (("tcp-1 mtu1450", "throughput"), ("tcp-4 mtu1450", "throughput"),
                             ("udp-64B mtu1450", "delivered"), ("udp-64B-16flows mtu1450", "delivered"),
                             ("ping mtu1450", "rtt p50")):
            fig = figures[("dataplane", case, mode, metric)]
            assert fig["status"] == "ok", fig
            assert fig["values"] and all(math.isfinite(v) and v > 0 for v in fig["values"]), fig
    ratio = figures[("dataplane", "tcp-1 mtu1450", "underlay", "throughput")]["extra"]["ratio_to_reference"]
    assert math.isfinite(ratio) and ratio > 0
    micro = figures[("micro", "decapsulate frame 64B", "pure-python", "cost")]
    assert micro["values"] and all(v > 0 for v in micro["values"])

    report = (tmp_path / run_dir / "report.md").read_text()
    assert "| tcp-1 mtu1450 | throughput (Gbit/s) |" in report
    # Modes that were not asked for are absent; nothing the run made is left behind.
    assert not [n for n in os.listdir("/run/netns") if n.startswith(run_prefix)]
