"""The control benchmark's FDB watch sees a VXLAN FDB entry being programmed (a real device in a real
namespace), and not a MAC the bridge merely learned from a frame."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from benchmarks.fdbwatch import FdbWatch

pytestmark = pytest.mark.integration


def test_watch_sees_programmed_vxlan_entries_only(netns: Callable[[str], str]) -> None:
    ns = netns("fw")
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="br0", kind="bridge")
        br = ipr.link_lookup(ifname="br0")[0]
        ipr.link("add", ifname="vx1", kind="vxlan", vxlan_id=42, vxlan_port=4789, vxlan_learning=0)
        vx = ipr.link_lookup(ifname="vx1")[0]
        ipr.link("set", index=vx, master=br, state="up")
        ipr.link("set", index=br, state="up")
        watch = FdbWatch({"h": f"/run/netns/{ns}"})
        try:
            t0 = time.time()
            # what a bridge learns from a frame: an entry on the port, no remote VTEP
            ipr.fdb("add", ifindex=vx, lladdr="02:00:00:00:00:01", state=0x80, flags=0x04)  # NTF_MASTER
            # what overlayd programs: the device's own entry with the VTEP behind the MAC
            ipr.fdb("replace", ifindex=vx, lladdr="02:00:00:00:00:02", dst="198.18.9.9", state=0x80, flags=0x02)
            seen = watch.wait("02:00:00:00:00:02", ["h"], t0, timeout=5)
            assert seen["h"] is not None and 0 <= seen["h"] < 5
            assert watch.wait("02:00:00:00:00:01", ["h"], t0, timeout=0.5) == {"h": None}
        finally:
            watch.close()
