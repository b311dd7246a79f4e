"""The userspace fast path with real namespaces, TAPs, bridges, kernel VXLAN peers and real packets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from overlaynet.dataplane.control import FastpathClient, FastpathControlError
from tests.support.fastpath import (
    Container,
    Lab,
    link_stats,
    nsexec,
    nspopen,
    ping,
    ping_until,
    tcp_transfer,
    wait_until,
)

pytestmark = pytest.mark.integration

MB = 1 << 20


def pair(make_lab: Callable[..., Lab], kind_a: str, kind_b: str, mtu: int = 1500, vni: int = 4097):
    lab = make_lab(mtu)
    lab.add_host("a", kind_a)
    lab.add_host("b", kind_b)
    lab.add_network(vni, ["a", "b"])
    ca = lab.add_container(vni, "a")
    cb = lab.add_container(vni, "b")
    lab.program()
    ping_until(ca, cb.ip)
    return lab, ca, cb


def counters(lab: Lab, host: str, vni: int) -> dict[str, int]:
    with lab.hosts[host].client() as c:
        return c.stats()["networks"][vni]


def test_userspace_pair_ping_tcp_offloads_and_counters(make_lab: Callable[..., Lab]) -> None:
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    assert ping(ca, cb.ip, count=3) and ping(cb, ca.ip, count=3)
    assert ping(ca, cb.ip, count=2, size=1400)  # full-MTU frames
    tcp_transfer(ca, cb, 16 * MB)
    tcp_transfer(cb, ca, 16 * MB, port=5002)
    with lab.hosts["a"].client() as c:
        off = c.offloads()
        st = c.stats()
    assert off["udp_gso"] and off["udp_gro"]
    tap = off["taps"][4097]
    assert tap["vnet_hdr"] and tap["csum"] and tap["tso4"] and tap["tso6"]
    assert len(set(off["tx_source_ports"])) == off["tx_sockets"]
    assert all(32768 <= p <= 60999 for p in off["tx_source_ports"])
    n = st["networks"][4097]
    assert n["tx_tso_frames"] > 0, "TCP should arrive from the TAP as TSO frames"
    assert n["rx_coalesced"] > 0, "received segments should be coalesced into GSO TAP writes"
    assert n["tx_arp_suppressed"] >= 1, "the ARP request for the remote container is answered locally"
    assert n["rx_drop_bad_sender"] == n["rx_drop_malformed"] == n["tx_errors"] == 0
    assert st["global"]["rx_drop_unknown_vni"] == 0 and st["global"]["tx_gso_sends"] > 0


def test_jumbo_inner_mtu(make_lab: Callable[..., Lab]) -> None:
    lab, ca, cb = pair(make_lab, "userspace", "userspace", mtu=9000)
    assert lab.networks[4097].mtu == 8950
    assert ping(ca, cb.ip, count=2, size=8900)
    tcp_transfer(ca, cb, 16 * MB)
    tcp_transfer(cb, ca, 16 * MB, port=5002)
    assert counters(lab, "a", 4097)["tx_tso_frames"] > 0


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_interop_with_kernel_vxlan(make_lab: Callable[..., Lab], mtu: int, tmp_path) -> None:
    lab, ca, cb = pair(make_lab, "userspace", "kernel", mtu=mtu)
    assert ping(ca, cb.ip, count=3) and ping(cb, ca.ip, count=3)
    tcp_transfer(ca, cb, 16 * MB)
    tcp_transfer(cb, ca, 16 * MB, port=5002)
    if mtu != 1500:
        return
    # the underlay as captured on the userspace host decodes cleanly as VXLAN
    pcap = str(tmp_path / "underlay.pcap")
    cap = nspopen(lab.hosts["a"].ns, "tcpdump", "-i", "eth0", "-w", pcap, "-c", "40", "udp port 4789",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        ping(ca, cb.ip, count=5)
        tcp_transfer(ca, cb, 256 * 1024, port=5003)
        cap.wait(20)
    finally:
        if cap.poll() is None:
            cap.send_signal(signal.SIGINT)
            cap.wait(10)
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import rdpcap

    pkts = rdpcap(pcap)
    assert len(pkts) >= 10
    for p in pkts:
        assert p[UDP].dport == 4789 and VXLAN in p
        assert p[VXLAN].flags == 0x08 and p[VXLAN].vni == 4097
        if p[IP].src == lab.hosts["a"].vtep:
            assert 32768 <= p[UDP].sport <= 60999
    tshark = subprocess.run(["tshark", "-r", pcap, "-d", "udp.port==4789,vxlan", "-T", "fields", "-e", "vxlan.vni",
                             "-e", "_ws.malformed", "-e", "_ws.expert.severity"],
                            capture_output=True, text=True, timeout=60)
    lines = [ln.split("\t") for ln in tshark.stdout.strip().splitlines()]
    assert len(lines) == len(pkts)
    assert all(f[0] == "4097" for f in lines), tshark.stdout
    assert not any(len(f) > 1 and f[1] for f in lines), "tshark flags malformed packets"


def test_vni_isolation_and_broadcast_to_every_host(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    for name, kind in (("a", "userspace"), ("b", "userspace"), ("c", "kernel")):
        lab.add_host(name, kind)
    lab.add_network(100, ["a", "b", "c"], index=1)
    lab.add_network(200, ["a", "b"], index=1)  # same subnet, other VNI
    red = [lab.add_container(100, h) for h in ("a", "b", "c")]
    blue = [lab.add_container(200, h) for h in ("a", "b")]
    lab.program()
    ping_until(red[0], red[1].ip)
    ping_until(red[0], red[2].ip)
    ping_until(blue[0], blue[1].ip)
    # the same IP answers from the right network only
    nsexec(red[0].ns, "ip", "neigh", "flush", "all")
    assert ping(red[0], red[1].ip)
    neigh = nsexec(red[0].ns, "ip", "neigh", "show", red[1].ip).stdout.decode()
    assert red[1].mac in neigh and blue[1].mac not in neigh

    listen = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 7777)); s.settimeout(8)\n"
        "print('ready', flush=True)\n"
        "try:\n    d,a=s.recvfrom(100); print(d.decode(), flush=True)\n"
        "except socket.timeout:\n    print('nothing', flush=True)\n"
    )
    receivers = {c.ns: nspopen(c.ns, "python3", "-c", listen, stdout=subprocess.PIPE) for c in red[1:] + blue}
    for p in receivers.values():
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    send = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "for _ in range(3): s.sendto(b'hello-red', ('198.19.1.255', 7777))\n")
    nsexec(red[0].ns, "python3", "-c", send)
    got = {ns: p.communicate(timeout=15)[0].decode().strip() for ns, p in receivers.items()}
    for c in red[1:]:
        assert got[c.ns] == "hello-red", f"broadcast did not reach {c.ns}"
    for c in blue:
        assert got[c.ns] == "nothing", f"network 100 broadcast leaked into network 200 ({c.ns})"
    assert counters(lab, "a", 100)["tx_flooded"] > 0


def test_drops_are_counted_by_reason(make_lab: Callable[..., Lab]) -> None:
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    rogue = lab.add_host("x", "kernel")  # on the underlay, but not a cluster member
    a = lab.hosts["a"]
    with a.client() as c:
        before_g = c.stats()["global"]
    inner = bytes.fromhex("020000000001" "0200000000ff" "0800") + b"\x45" + b"\0" * 40
    pkts = {
        "unknown_vni": bytes([8, 0, 0, 0, 0, 0x99, 0x99, 0]) + inner,
        "bad_flags": bytes([0x0C, 0, 0, 0, 0, 0x10, 0x01, 0]) + inner,
        "truncated": bytes([8, 0, 0, 0, 0, 0x10, 0x01]),
        "bad_sender": bytes([8, 0, 0, 0, 0, 0x10, 0x01, 0]) + inner,
    }
    code = "import socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" + "".join(
        f"s.sendto(bytes.fromhex('{p.hex()}'), ('{a.vtep}', 4789))\n" for p in pkts.values())
    nsexec(rogue.ns, "python3", "-c", code)

    def dropped() -> bool:
        with a.client() as c:
            st = c.stats()
        g, n = st["global"], st["networks"][4097]
        return (g["rx_drop_unknown_vni"] > before_g["rx_drop_unknown_vni"]
                and g["rx_drop_malformed"] > before_g["rx_drop_malformed"]
                and g["rx_drop_truncated"] > before_g["rx_drop_truncated"]
                and n["rx_drop_bad_sender"] >= 1)

    wait_until(dropped, 10, "drop counters")
    assert ping(ca, cb.ip)  # and forwarding is unaffected


def test_fastpathd_survives_controller_death_and_resyncs(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab = make_lab()
    lab.add_host("b", "userspace")
    a = lab.add_host("a", "userspace")
    # this fastpathd keeps its state so that it can also be restarted
    lab.stop_fastpathd(a)
    state = str(tmp_path / "a.state")
    lab.start_fastpathd(a, state=state)
    lab.add_network(4097, ["a", "b"])
    ca, cb = lab.add_container(4097, "a"), lab.add_container(4097, "b")
    lab.program()
    ping_until(ca, cb.ip)

    # a controller process programs fastpathd, holds its connection open, and dies hard
    ctl = (
        "import sys,time\nsys.path.insert(0, {!r})\n"
        "from overlaynet.dataplane.control import FastpathClient\n"
        "c=FastpathClient({!r}); c.sync_peers([{!r}]); c.sync_flood(4097, [{!r}]); print('programmed', flush=True)\n"
        "time.sleep(60)\n"
    ).format(os.getcwd(), a.control, lab.hosts["b"].vtep, lab.hosts["b"].vtep)
    proc = subprocess.Popen([sys.executable, "-c", ctl], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"programmed"
    proc.kill()
    proc.wait()
    assert ping(ca, cb.ip, count=3), "forwarding must continue without a controller"
    tcp_transfer(ca, cb, 4 * MB)

    # the controller comes back: it reads what is programmed and re-syncs idempotently
    with FastpathClient(a.control) as c:
        have = c.networks()
        assert 4097 in have["networks"] and have["peers"] == [lab.hosts["b"].vtep]
        net = have["networks"][4097]
        c.add_network(4097, net["netns"], net["tap"], net["mtu"])  # same again: no-op
        with pytest.raises(FastpathControlError, match="exists with another"):
            c.add_network(4097, net["netns"], "other", net["mtu"])
        with pytest.raises(FastpathControlError, match="not an IPv4 address"):
            c.sync_flood(4097, ["nope"])

        # live table updates while traffic flows: the transfer stays intact
        flood = [lab.hosts["b"].vtep]
        for i in range(50):
            c.sync_fdb(4097, {cb.mac: lab.hosts["b"].vtep} if i % 2 else {})
            c.sync_flood(4097, flood)
    tcp_transfer(ca, cb, 4 * MB, port=5003)

    # fastpathd itself restarts from its state file; the TAP persisted and stayed in the bridge
    lab.stop_fastpathd(a)
    lab.start_fastpathd(a, state=state)
    ping_until(ca, cb.ip, timeout=15)
    with FastpathClient(a.control) as c:
        assert 4097 in c.networks()["networks"]
        assert c.remove_network(4097) is True
    assert not ping(ca, cb.ip, count=1)


def test_live_updates_during_transfer(make_lab: Callable[..., Lab]) -> None:
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    import threading

    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            with lab.hosts["a"].client() as c:
                i = 0
                while not stop.is_set():
                    c.sync_fdb(4097, {cb.mac: lab.hosts["b"].vtep, f"02:00:00:00:{i % 256:02x}:01": "198.18.0.9"})
                    c.sync_arp(4097, {cb.ip: cb.mac})
                    c.sync_peers([lab.hosts["b"].vtep])
                    i += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=churn)
    t.start()
    try:
        tcp_transfer(ca, cb, 32 * MB)
        tcp_transfer(cb, ca, 8 * MB, port=5002)
    finally:
        stop.set()
        t.join()
    assert not errors
    assert link_stats(cb.ns, "eth0")["rx_packets"] > 0
    n = counters(lab, "a", 4097)
    assert n["tx_errors"] == 0 and n["rx_drop_bad_sender"] == 0


# The start of every sink below: UDP port 7000, a buffer for bursts, "ready" once bound.
SINK_SOCKET = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind(("0.0.0.0", 7000))
s.settimeout(10)
print("ready", flush=True)
"""

UDP_SINK = SINK_SOCKET + r"""
got = []
try:
    while True:
        got.append(s.recv(70000))
        s.settimeout(1.5)
except socket.timeout:
    pass
bad = [d for d in got if len(d) < 8 or d != d[:8] * (len(d) // 8) + d[:len(d) % 8]]
print(len(got), len(bad), len({d[:8] for d in got}))
"""

def run_udp(src: Container, dst: Container, sender: str, sink_code: str) -> tuple[int, list[int]]:
    """Run `sink_code` (Python: prints "ready", then its counts) in dst and `sender` (Python; argv[1]
    is dst's address, it prints how many datagrams it sent) in src. Returns (sent, the sink's counts)."""
    sink = nspopen(dst.ns, sys.executable, "-c", sink_code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == b"ready"
        sent = int(nsexec(src.ns, sys.executable, "-c", sender, dst.ip).stdout)
        out, _ = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    return sent, [int(x) for x in out.split()]


def udp_datagrams_arrive_whole(src: Container, dst: Container, sender: str) -> int:
    """Run `sender` in src against UDP_SINK in dst; check every datagram arrived whole and once.
    Returns how many arrived."""
    sent, (received, malformed, distinct) = run_udp(src, dst, sender, UDP_SINK)
    assert malformed == 0, "a datagram arrived cut, merged or with foreign bytes"
    assert distinct == received, "a datagram arrived twice"
    assert received >= sent * 0.95, f"only {received} of {sent} datagrams arrived"
    return received


UDP_BURSTS = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
for burst in range(60):
    size = 24 + (burst % 7) * 180
    for i in range(40):
        tag = b"%08d" % n
        n += 1
        length = size if i < 39 else size // 2 + 3  # a shorter last datagram ends each train
        s.sendto((tag * (length // 8 + 1))[:length], (sys.argv[1], 7000))
    time.sleep(0.002)
print(n)
"""


def test_udp_trains_are_coalesced_and_arrive_datagram_for_datagram(make_lab: Callable[..., Lab]) -> None:
    """Bursts of same-size datagrams are written into the TAP as UDP GSO frames (where the kernel
    takes them); the receiving socket must still get every datagram whole, with its own length."""
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    with lab.hosts["b"].client() as c:
        tap = c.offloads()["taps"][4097]
    before = counters(lab, "b", 4097)
    received = udp_datagrams_arrive_whole(ca, cb, UDP_BURSTS)
    after = counters(lab, "b", 4097)
    if tap["uso"]:  # the same kernel feature lets the TAP take UDP GSO writes
        assert after["rx_coalesced"] > before["rx_coalesced"], "UDP trains should be coalesced"
        assert after["rx_tap_writes"] - before["rx_tap_writes"] < received, "fewer TAP writes than datagrams"


UDP_GSO_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT: the kernel (or the TAP's reader) cuts 1000-byte datagrams
n = 0
for k in range(40):
    buf = b"".join((b"%08d" % (n + i)) * 125 for i in range(20))  # 20 datagrams of 1000 bytes
    n += 20
    s.sendto(buf, (sys.argv[1], 7000))
print(n)
"""


def test_udp_gso_sends_from_a_container_are_split_into_datagrams(make_lab: Callable[..., Lab]) -> None:
    """An application's UDP_SEGMENT send reaches the fast path as one USO frame (where the TAP
    offers USO) and leaves as its datagrams; the far socket gets each one whole."""
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    with lab.hosts["a"].client() as c:
        tap = c.offloads()["taps"][4097]
    before = counters(lab, "a", 4097)
    udp_datagrams_arrive_whole(ca, cb, UDP_GSO_SENDER)
    after = counters(lab, "a", 4097)
    if tap["uso"]:
        assert after["tx_tso_frames"] - before["tx_tso_frames"] >= 20, "UDP GSO sends should arrive whole"


INTERLEAVED_SENDER = r"""
import socket, sys, time
flows = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
n = 0
for burst in range(40):
    for seq in range(burst * 8, burst * 8 + 8):
        for f, s in enumerate(flows):  # round robin: neighbouring frames belong to different flows
            s.sendto(b"%02d%06d" % (f, seq) + bytes(10), (sys.argv[1], 7000))
            n += 1
    time.sleep(0.002)
print(n)
"""

ORDER_SINK = SINK_SOCKET + r"""
last, got, reordered = {}, 0, 0
try:
    while True:
        d, (_, port) = s.recvfrom(100)
        s.settimeout(1.5)
        got += 1
        seq = int(d[2:8])
        reordered += seq <= last.get(port, -1)
        last[port] = seq
except socket.timeout:
    pass
print(got, reordered, len(last))
"""


def test_interleaved_small_flows_keep_their_order(make_lab: Callable[..., Lab]) -> None:
    """Small frames of many flows, interleaved frame by frame, are regrouped per (socket, VTEP)
    into UDP GSO trains on the sending host; each flow must still arrive in its own order."""
    lab, ca, cb = pair(make_lab, "userspace", "userspace")
    sent, (received, reordered, flows) = run_udp(ca, cb, INTERLEAVED_SENDER, ORDER_SINK)
    assert flows == 16
    assert reordered == 0, f"{reordered} datagrams arrived behind a later one of their flow"
    assert received >= sent * 0.95, f"only {received} of {sent} datagrams arrived"
