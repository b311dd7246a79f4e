"""Outer checksum steering: datagrams without an outer UDP checksum get their inner checksums verified,
datagrams whose non-zero outer checksum the kernel verified do not (it covered every inner byte)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fastpath import Lab, nsexec, ping, ping_until, tcp_transfer, wait_until

pytestmark = pytest.mark.integration

VNI = 4097


@pytest.fixture
def lab(prefix: str, netns: Callable[[str], str], tmp_path) -> Iterator[Lab]:
    lab = Lab(prefix, netns, str(tmp_path), 1500)
    try:
        yield lab
    finally:
        lab.close()


def stats(lab: Lab, host: str) -> tuple[dict[str, int], dict[str, int]]:
    with lab.hosts[host].client() as c:
        st = c.stats()
    return st["global"], st["networks"][VNI]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_outer_checksum_decides_inner_verification(lab: Lab, workers: str) -> None:
    for name in ("a", "b"):
        lab.add_host(name, "userspace", ("--workers", workers))
    lab.add_host("k", "kernel")
    lab.add_network(VNI, ["a", "b", "k"])
    ca, cb, ck = (lab.add_container(VNI, h) for h in ("a", "b", "k"))
    lab.program()
    ping_until(ca, cb.ip)
    with lab.hosts["a"].client() as c:
        off = c.offloads()
    assert off["outer_csum_steering"] and off["checksum"] in ("avx2", "portable")

    # userspace peers send non-zero outer checksums: nothing arrives on the zero-checksum socket
    tcp_transfer(cb, ca, 4 << 20)
    g, n = stats(lab, "a")
    assert g["rx_outer_csum_zero"] == 0 and n["rx_coalesced"] > 0 and n["rx_csum_bad"] == 0

    # kernel VXLAN (udp_csum on by default here; over veth its inner checksums are CHECKSUM_PARTIAL,
    # which must still be told apart and passed as NEEDS_CSUM) both ways
    ping_until(ck, ca.ip)
    assert ping(ck, ca.ip, count=3)
    tcp_transfer(ck, ca, 2 << 20, port=5002)
    tcp_transfer(ca, ck, 2 << 20, port=5003)

    # A TCP segment whose inner checksum is wrong, sent by member b's VTEP both ways.
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw, raw

    frame = bytearray(raw(Ether(src=cb.mac, dst=ca.mac) / IP(src=cb.ip, dst=ca.ip) /
                          TCP(sport=40000, dport=9, flags="A") / Raw(b"z" * 100)))
    frame[-1] ^= 0xFF  # payload changed after the checksum was computed
    pkt = bytes([8, 0, 0, 0, VNI >> 16 & 0xFF, VNI >> 8 & 0xFF, VNI & 0xFF, 0]) + bytes(frame)
    send = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, 11, {nocheck})\n"  # SO_NO_CHECK: no outer UDP checksum
            f"s.sendto(bytes.fromhex('{pkt.hex()}'), ('{lab.hosts['a'].vtep}', 4789))\n")
    g0, n0 = stats(lab, "a")
    nsexec(lab.hosts["b"].ns, "python3", "-c", send.format(nocheck=1))
    wait_until(lambda: stats(lab, "a")[1]["rx_csum_bad"] == n0["rx_csum_bad"] + 1, 10, "rx_csum_bad")
    g1, n1 = stats(lab, "a")
    assert g1["rx_outer_csum_zero"] == g0["rx_outer_csum_zero"] + 1

    # with an outer checksum (computed by b's kernel, verified by a's) the inner one is not checked
    nsexec(lab.hosts["b"].ns, "python3", "-c", send.format(nocheck=0))
    wait_until(lambda: stats(lab, "a")[1]["rx_packets"] >= n1["rx_packets"] + 1, 10, "rx_packets")
    g2, n2 = stats(lab, "a")
    assert g2["rx_outer_csum_zero"] == g1["rx_outer_csum_zero"] and n2["rx_csum_bad"] == n1["rx_csum_bad"]
    assert ping(ca, cb.ip) and ping(ca, ck.ip)
