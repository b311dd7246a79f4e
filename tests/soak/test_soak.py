"""The soak tier: `make soak` runs 30 minutes on 8 hosts; `make test` runs a short variant.

Settings come from the environment: OVERLAYNET_SOAK_SECONDS (default 150: with setup and the final
checks about 3 minutes on 2 cores), OVERLAYNET_SOAK_HOSTS (default 4, half userspace and half kernel:
8 overlayd plus churn do not fit in 3 minutes on 2 shared cores), OVERLAYNET_SOAK_RESULTS (the JSON
file) and OVERLAYNET_SOAK_PUBLISH=1 to write the table into docs/reliability.md.
"""

from __future__ import annotations

import json
import os

import pytest

from overlaynet.lab import Lab
from tests.soak.soak import Soak, write_results

pytestmark = pytest.mark.soak

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "reliability.md")


@pytest.fixture
def soak_lab(prefix: str):
    lab = Lab(prefix=f"{prefix}k")
    soak: list[Soak] = []
    try:
        yield lab, soak
    finally:
        for s in soak:
            s.stop_pingers()
        lab.close()


@pytest.mark.timeout(3600)  # the run bounds itself (OVERLAYNET_SOAK_SECONDS); setup and checks add minutes
def test_soak_churn_and_faults_keep_every_invariant(soak_lab, prefix):
    lab, holder = soak_lab
    seconds = float(os.environ.get("OVERLAYNET_SOAK_SECONDS", "150"))
    hosts = int(os.environ.get("OVERLAYNET_SOAK_HOSTS", "4"))
    soak = Soak(lab, hosts=hosts, seconds=seconds)
    holder.append(soak)
    soak.start()
    results = soak.run()
    path = os.environ.get("OVERLAYNET_SOAK_RESULTS") or f"/tmp/{prefix}-soak.json"
    publish = os.environ.get("OVERLAYNET_SOAK_PUBLISH") == "1"
    write_results(results, path, DOCS if publish else None)
    print(f"soak results: {path}\n" + json.dumps(results.loss_by_fault, indent=1))
    print("RSS KiB start/end:", {h: (v[0], v[-1]) for h, v in results.rss_kb.items()})
    print("fds start/end:", {h: (v[0], v[-1]) for h, v in results.fds.items()})
    assert results.violations == [], "\n".join(results.violations)
    kinds = {f["kind"] for f in results.faults}
    assert {"overlayd-kill", "fastpathd-kill", "partition", "key-rotation", "network-create-delete"} <= kinds, kinds
