"""fastpathd's adaptive polling: it may poll while traffic flows, but an idle host goes back to sleep.

A host that polled after its last frame forever (or for a long fixed window) would burn a core per
host with nobody talking; the workers must be back in epoll_wait() soon after traffic stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.fastpath import Lab, nsexec, ping_until, tcp_transfer

pytestmark = pytest.mark.integration

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime of all threads


@pytest.fixture
def lab(prefix: str, netns: Callable[[str], str], tmp_path) -> Iterator[Lab]:
    lab = Lab(prefix, netns, str(tmp_path))
    yield lab
    lab.close()


@pytest.mark.parametrize("args", [(), ("--poll-us", "200")], ids=["default", "adaptive-poll"])
def test_fastpathd_sleeps_once_traffic_stops(lab: Lab, args: tuple[str, ...]) -> None:
    lab.add_host("a", "userspace", args)
    lab.add_host("b", "userspace", args)
    lab.add_network(4097, ["a", "b"])
    ca = lab.add_container(4097, "a")
    cb = lab.add_container(4097, "b")
    lab.program()
    ping_until(ca, cb.ip)
    # request/response traffic (what the polling window is for) and a bulk transfer
    nsexec(ca.ns, "ping", "-q", "-c", "200", "-i", "0.005", cb.ip)
    tcp_transfer(ca, cb, 8 << 20)
    pids = [h.proc.pid for h in lab.hosts.values() if h.proc is not None]
    time.sleep(0.5)
    before, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(3.0)
    wall = time.monotonic() - t0
    share = [(cpu_seconds(p) - b) / wall for p, b in zip(pids, before, strict=True)]
    # a worker still polling would show ~1.0 (a whole core); sleeping, it is ~0 (a 500 ms epoll
    # timeout and the control loop). 0.1 leaves room for a busy machine's accounting noise.
    assert max(share) < 0.1, f"fastpathd CPU share with no traffic: {share}"
    # and it still forwards at once after sleeping
    ping_until(ca, cb.ip, timeout=5)


def voluntary_switches(pid: int) -> int:
    """Of the process's main thread (the asyncio control loop): how often it went to sleep."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))


def test_control_loop_without_encrypted_networks_does_not_tick(lab: Lab) -> None:
    """No SA to top up: the control loop sleeps until a request comes, instead of waking 20 times a
    second on every host (ESP sequence-number reservations are only for encrypted networks)."""
    host = lab.add_host("a", "userspace")
    lab.add_network(4097, ["a"])
    assert host.proc is not None
    time.sleep(0.5)
    before = voluntary_switches(host.proc.pid)
    time.sleep(3.0)
    woke = voluntary_switches(host.proc.pid) - before
    assert woke < 10, f"the control loop woke {woke} times in 3 s with no request and no SA"
