"""The tc programs benchmarks.netfilter_cost prices as cheaper stand-ins for the guard and the
members-only filter (benchmarks/guard_alternatives.py, benchmarks/guard_ebpf.py) really enforce what
they stand in for, and the eBPF ones count what they drop: a price of a filter that lets everything
through would say nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from benchmarks import guard_alternatives as alt
from benchmarks import guard_ebpf

pytestmark = pytest.mark.integration

A, B, ALIAS = "198.19.251.1", "198.19.251.2", "198.19.251.7"
UDP_SEND = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x' * 40, (sys.argv[1], int(sys.argv[2])))"
UDP_RECV = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', int(sys.argv[1])));"
            " s.settimeout(2); print('ready', flush=True)\ntry: s.recv(100); print('got')\nexcept OSError: print('nothing')")


def pair(netns) -> tuple[str, str, str, str]:
    """Namespaces a and b joined by a veth (a: A, b: B); returns (a, b, a's MAC, b's device)."""
    a, b = netns("ga"), netns("gb")
    with IPRoute(netns=a) as ipr:
        ipr.link("add", ifname="ga0", kind="veth", peer={"ifname": "gb0", "net_ns_fd": b})
        idx = ipr.link_lookup(ifname="ga0")[0]
        ipr.addr("add", index=idx, address=A, prefixlen=24)
        ipr.link("set", index=idx, state="up")
        mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
    with IPRoute(netns=b) as ipr:
        idx = ipr.link_lookup(ifname="gb0")[0]
        ipr.addr("add", index=idx, address=B, prefixlen=24)
        ipr.link("set", index=idx, state="up")
    return a, b, mac, "gb0"


def pings(ns: str, dst: str, *extra: str) -> bool:
    subprocess.run(["ip", "netns", "exec", ns, "ip", "neigh", "flush", "all"], capture_output=True)
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", *extra, dst],
                          capture_output=True).returncode == 0


def udp_arrives(src: str, dst: str, port: int) -> bool:
    recv = subprocess.Popen(["ip", "netns", "exec", dst, sys.executable, "-c", UDP_RECV, str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    subprocess.run(["ip", "netns", "exec", src, sys.executable, "-c", UDP_SEND, B, str(port)], check=True)
    out, _ = recv.communicate(timeout=10)
    return out.strip() == "got"


def test_the_port_program_passes_the_container_as_itself_and_drops_spoofing(netns):
    a, b, mac, dev = pair(netns)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.port_program(mac, A, ("02:00:00:00:00:99",)))
    assert pings(a, B)  # IPv4 and ARP as itself
    subprocess.run(["ip", "netns", "exec", a, "ip", "addr", "add", f"{ALIAS}/24", "dev", "ga0"], check=True)
    assert not pings(a, B, "-I", ALIAS)  # another source address (its ARP too)
    subprocess.run(["ip", "netns", "exec", a, "ip", "link", "set", "ga0", "address", "02:00:00:00:00:42"], check=True)
    assert not pings(a, B)  # another source MAC


def test_the_overlay_program_drops_a_source_mac_that_lives_here(netns):
    a, b, mac, dev = pair(netns)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.overlay_program(("02:00:00:00:00:99",), "198.19.251.9"))
    assert pings(a, B)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.overlay_program(("02:00:00:00:00:99", mac), "198.19.251.9"))
    assert not pings(a, B)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.overlay_program(("02:00:00:00:00:99",), A))
    assert not pings(a, B)  # ARP naming the gateway's address as sender


def test_the_vxlan_program_admits_members_only(netns):
    a, b, _, dev = pair(netns)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.vxlan_program((A,), 4789))
    assert udp_arrives(a, b, 4789)
    alt.attach_tc_program(f"/run/netns/{b}", dev, alt.vxlan_program(("198.19.251.9",), 4789))
    assert not udp_arrives(a, b, 4789)
    assert udp_arrives(a, b, 4790)  # other UDP is none of its business


def test_the_ebpf_port_program_drops_spoofing_and_counts_it_by_reason(netns):
    a, b, mac, dev = pair(netns)
    programs = guard_ebpf.Programs(mac, A, ("02:00:00:00:00:99",), ("02:00:00:00:00:98",), "198.19.251.9", (A,), 4789)
    try:
        guard_ebpf.attach(f"/run/netns/{b}", dev, programs.port)
        assert pings(a, B)
        assert programs.drops()["arp_spoof"] == programs.drops()["ip_spoof"] == 0
        subprocess.run(["ip", "netns", "exec", a, "ip", "addr", "add", f"{ALIAS}/24", "dev", "ga0"], check=True)
        assert not pings(a, B, "-I", ALIAS)
        assert programs.drops()["arp_spoof"] >= 1  # its ARP request names the alias as sender
        subprocess.run(["ip", "netns", "exec", a, "ip", "link", "set", "ga0", "address", "02:00:00:00:00:42"], check=True)
        assert not pings(a, B)
        assert programs.drops()["mac_spoof"] >= 1
    finally:
        programs.close()


def test_the_ebpf_vxlan_program_admits_members_only_and_counts_the_rest(netns):
    a, b, mac, dev = pair(netns)
    for members, arrives in (((A,), True), (("198.19.251.9",), False)):
        programs = guard_ebpf.Programs(mac, A, (), (), "198.19.251.9", members, 4789)
        try:
            guard_ebpf.attach(f"/run/netns/{b}", dev, programs.vxlan)
            assert udp_arrives(a, b, 4789) is arrives
            assert udp_arrives(a, b, 4790)
            assert programs.drops()["non_member"] == (0 if arrives else 1)
        finally:
            programs.close()
