"""Fuzzing the userspace VXLAN receive path in a running fastpathd (the Cython/C engine behind
overlaynet.dataplane.fastpath): from a member's own address, hypothesis-made datagrams reach the
VXLAN port of the other host (garbage, VXLAN headers with bad flags, the network's VNI with
mangled inner frames: runt, broadcast source MAC, bad IP/TCP/UDP headers). fastpathd must survive,
count the drops by reason, and keep carrying the containers' traffic.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet import kernel
from overlaynet.lab import Lab, wait_until
from tests.support.cluster import FAST, alive_count
from tests.support.engines import http_unix

pytestmark = pytest.mark.adversarial

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pair(prefix: str) -> Iterator[dict[str, Any]]:
    lab = Lab(prefix=f"{prefix}vf")
    sender = None
    try:
        h1, h2 = lab.add_host("h1"), lab.add_host("h2")
        lab.start_daemon(h1, "--plaintext", "--dataplane", "userspace", *FAST)
        lab.start_daemon(h2, "--plaintext", "--dataplane", "userspace", "--join", h1.address, *FAST)
        wait_until(lambda: alive_count(lab, h1) == 2 and alive_count(lab, h2) == 2, what="2 members alive")
        lab.overlayctl(h1, "network", "create", "fv", "--subnet", "198.19.76.0/24")
        vni = lab.overlayctl_json(h1, "network", "inspect", "fv")["vni"]
        a, b = lab.add_container("a"), lab.add_container("b")
        ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "fv")
        ep_b = lab.overlayctl_json(h2, "attach", b, "--network", "fv")
        lab.wait_ping(b, ep_a["ip"])
        # A socket born in h2's namespace sends from h2's underlay address: a member's.
        sender = kernel.call_in_netns(f"/run/netns/{h2.netns}", socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        yield {"lab": lab, "h1": h1, "vni": vni, "a": a, "b": b, "ep_a": ep_a, "ep_b": ep_b, "sender": sender}
    finally:
        if sender is not None:
            sender.close()
        lab.close()


def vxlan(vni: int, flags: int = 0x08) -> bytes:
    return struct.pack("!B3xI", flags, vni << 8)


def inner_frames(ep: dict[str, Any]) -> st.SearchStrategy[bytes]:
    dst = bytes.fromhex(ep["mac"].replace(":", ""))
    ip_head = st.binary(min_size=0, max_size=60)
    ether = st.tuples(st.sampled_from([dst, b"\xff" * 6]), st.sampled_from([b"\x02\x00\x00\x00\x00\x66",
                                                                          b"\xff" * 6, b"\x00" * 6]),
                      st.sampled_from([b"\x08\x00", b"\x08\x06", b"\x86\xdd", b"\x81\x00"]))
    return st.tuples(ether, ip_head).map(lambda t: t[0][0] + t[0][1] + t[0][2] + t[1])


def datagrams(vni: int, ep: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, 255), inner_frames(ep)).map(lambda t: vxlan(vni, t[0]) + t[1]),
        inner_frames(ep).map(lambda frame: vxlan(vni) + frame),
        st.tuples(st.integers(0, 0xFFFFFF), inner_frames(ep)).map(lambda t: vxlan(t[0]) + t[1]),
    )


@given(data=st.data())
@FUZZ
def test_garbage_to_the_vxlan_port(pair: dict[str, Any], data: st.DataObject) -> None:
    datagram = data.draw(datagrams(pair["vni"], pair["ep_a"]))
    pair["sender"].sendto(datagram, (pair["h1"].address, 4789))


def test_fastpathd_survived_counted_and_still_forwards(pair: dict[str, Any]) -> None:
    lab, h1 = pair["lab"], pair["h1"]
    # Runs after the fuzzer (same module-scoped lab); the known garbage below makes it stand alone.
    for n in range(60):
        pair["sender"].sendto(vxlan(pair["vni"], flags=0x0C) + b"\x00" * n, (h1.address, 4789))
    lab.wait_ping(pair["b"], pair["ep_a"]["ip"])
    lab.wait_ping(pair["a"], pair["ep_b"]["ip"])
    stats = lab.overlayctl_json(h1, "stats")
    both = (stats.get("global", {}), stats["networks"].get(str(pair["vni"]), {}))  # some names are in both
    drops = sum(v for counters in both for k, v in counters.items() if k.startswith("rx_drop") or k == "rx_csum_bad")
    assert drops > 50, json.dumps(both)
    status, health = http_unix(h1.socket, "GET", "/v1/health")
    assert status == 200 and json.loads(health)["status"] == "ok", health  # fastpathd is up
