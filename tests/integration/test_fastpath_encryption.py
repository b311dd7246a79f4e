"""Encrypted networks in the userspace fast path, on real namespaces with real packets: the wire is
captured on the underlay and opened with scapy's own ESP (the independent check of the standard), and
every fail-closed rule is attacked: cleartext injection, replay, an epoch that is gone, no SA, a
kill -9 restart, sequence-number exhaustion."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import msgpack
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw, raw

from overlaynet.dataplane import esp_wire
from overlaynet.dataplane.control import FastpathControlError
from tests.support.capture import Capture, Opener, esp_packets, esp_payload, spi_seq, udp_packets
from tests.support.fastpath import Lab, Network, nsexec, nspopen, ping, ping_until, tcp_transfer, wait_until

pytestmark = pytest.mark.integration

VNI = 4097
PLAIN_VNI = 4098
MB = 1 << 20


def encrypted_lab(make_lab: Callable[..., Lab], hosts: tuple[str, ...] = ("a", "b"), program: bool = True,
                  arp: bool = True) -> tuple[Lab, Network]:
    lab = make_lab()
    for h in hosts:
        lab.add_host(h, "userspace", state=True)
    net = lab.add_network(VNI, list(hosts), encrypted=True)
    for h in hosts:
        lab.add_container(VNI, h)
    if program:
        lab.program(arp=arp)
    return lab, net


def stats(lab: Lab, host: str) -> dict:
    with lab.hosts[host].client() as c:
        return c.stats()


def net_counters(lab: Lab, host: str, vni: int = VNI) -> dict[str, int]:
    return stats(lab, host)["networks"][vni]


def opener(lab: Lab, net: Network) -> Opener:
    """scapy SAs for every ordered host pair and installed epoch of `net`."""
    sas = {}
    for src in net.sandboxes:
        for dst in net.sandboxes:
            if src != dst:
                for epoch in net.epochs:
                    p = lab.sa(net, src, dst, epoch)
                    sas[p.spi] = p
    return Opener(sas)


def send_udp(lab: Lab, host: str, dst: str, port: int, payloads: list[bytes]) -> None:
    """Send raw UDP payloads from `host`'s underlay address (a member's address: the attacker is on the path)."""
    code = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('{lab.hosts[host].vtep}', 0))\n"
            + "".join(f"s.sendto(bytes.fromhex('{p.hex()}'), ('{dst}', {port}))\n" for p in payloads))
    nsexec(lab.hosts[host].ns, "python3", "-c", code)


def test_encrypted_pair_sends_only_esp_that_scapy_opens_both_ways(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a, b = lab.hosts["a"], lab.hosts["b"]
    ping_until(ca, cb.ip)
    with Capture(a.ns, str(tmp_path / "a.pcap")) as cap:
        assert ping(ca, cb.ip, count=3, size=200) and ping(cb, ca.ip, count=3, size=1300)
        tcp_transfer(ca, cb, 2 * MB)
        tcp_transfer(cb, ca, 2 * MB, port=5002)
    pkts = udp_packets(cap.packets())
    assert len(pkts) > 20
    assert all(p[UDP].sport == esp_wire.PORT and p[UDP].dport == esp_wire.PORT for p in pkts), \
        "only ESP in UDP 4500 on the wire"
    assert not [p for p in pkts if 4789 in (p[UDP].sport, p[UDP].dport)], "cleartext VXLAN on the wire"

    o = opener(lab, net)
    icmp = {(a.vtep, 8): 0, (b.vtep, 0): 0, (b.vtep, 8): 0, (a.vtep, 0): 0}
    for p in esp_packets(pkts):
        clear = o.open(p)  # every captured packet authenticates under the derived key of its direction
        spi, _ = spi_seq(p)
        src_vtep, dst_vtep = p[IP].src, p[IP].dst
        want = lab.sa(net, "a" if src_vtep == a.vtep else "b", "b" if dst_vtep == b.vtep else "a")
        assert spi == want.spi, "each direction has its own SA"
        assert clear[UDP].dport == 4789 and clear[VXLAN].vni == VNI and clear[VXLAN].flags == 0x08
        if ICMP in clear and clear[ICMP].type in (0, 8):
            icmp[(src_vtep, clear[ICMP].type)] += 1
            assert len(clear[ICMP].payload) in (200, 1300)  # ping -s: the payload arrived whole
    assert all(icmp.values()), f"echo request and reply decrypted in both directions: {icmp}"

    st = stats(lab, "a")
    n = st["networks"][VNI]
    assert n["tx_esp"] > 0 and n["rx_esp"] > 0 and st["global"]["tx_esp"] == n["tx_esp"]
    # the fast path's batching holds with encryption: TSO frames sealed segment by segment and sent as
    # UDP GSO trains; received trains opened and coalesced into GSO TAP writes
    assert n["tx_tso_frames"] > 0 and st["global"]["tx_gso_sends"] > 0 and n["rx_coalesced"] > 0
    # (tx_drop_no_sa may count the frames sent between add_network and sync_sas: that is the point)
    assert n["rx_drop_auth"] == n["rx_drop_replay"] == n["rx_drop_cleartext"] == n["rx_drop_esp_mismatch"] == 0
    with a.client() as c:
        view = c.networks()["networks"][VNI]
    assert view["encrypted"] is True
    assert {(s["dir"], s["peer"]) for s in view["sas"]} == {("out", b.vtep), ("in", b.vtep)}
    out = next(s for s in view["sas"] if s["dir"] == "out")
    assert out["seq"] > 0 and out["seq_limit"] > out["seq"] and out["spi"] == lab.sa(net, "a", "b").spi
    assert "key" not in str(view) and "salt" not in str(view), "networks never shows key material"


def test_three_hosts_flood_unicast_and_a_plain_network_alongside(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab = make_lab()
    for h in ("a", "b", "c"):
        lab.add_host(h, "userspace", state=True)
    enc = lab.add_network(VNI, ["a", "b", "c"], index=1, encrypted=True)
    plain = lab.add_network(PLAIN_VNI, ["a", "b", "c"], index=2)
    red = [lab.add_container(VNI, h) for h in ("a", "b", "c")]
    blue = [lab.add_container(PLAIN_VNI, h) for h in ("a", "b", "c")]
    lab.program(arp=False)  # ARP requests are broadcasts: flooded (sealed per peer) to every host
    with Capture(lab.hosts["a"].ns, str(tmp_path / "a.pcap")) as cap:
        for src, dst in ((0, 1), (0, 2), (1, 2), (2, 0)):
            ping_until(red[src], red[dst].ip)
            ping_until(blue[src], blue[dst].ip)
        tcp_transfer(red[1], red[0], 2 * MB)
    pkts = udp_packets(cap.packets())
    vxlan = [p for p in pkts if p[UDP].dport == 4789]
    esp = [p for p in pkts if p[UDP].dport == esp_wire.PORT]
    assert vxlan and esp
    assert {p[VXLAN].vni for p in vxlan} == {PLAIN_VNI}, "only the plain network is in cleartext"
    o = opener(lab, enc)
    seen_arp_from_a = set()
    for p in esp_packets(esp):
        clear = o.open(p)
        assert clear[VXLAN].vni == VNI
        if p[IP].src == lab.hosts["a"].vtep and clear[Ether].dst == "ff:ff:ff:ff:ff:ff":
            seen_arp_from_a.add(p[IP].dst)
    assert seen_arp_from_a == {lab.hosts["b"].vtep, lab.hosts["c"].vtep}, "a broadcast is sealed for every peer"
    assert net_counters(lab, "a")["tx_flooded"] > 0 and net_counters(lab, "a", PLAIN_VNI)["tx_esp"] == 0
    assert plain.encrypted is False


def test_cleartext_vxlan_for_an_encrypted_vni_is_dropped_and_counted(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    ping_until(ca, cb.ip)
    a = lab.hosts["a"]
    # an echo request to ca, as cleartext VXLAN from b's address (a member): it must never reach ca
    frame = raw(Ether(src=cb.mac, dst=ca.mac) / IP(src=cb.ip, dst=ca.ip) / ICMP(id=0x4242) / Raw(b"cleartext"))
    vxlan = raw(VXLAN(vni=VNI, flags=0x08)) + frame
    before = net_counters(lab, "a")
    with Capture(ca.ns, str(tmp_path / "ca.pcap"), bpf="icmp", iface="eth0") as cap:
        send_udp(lab, "b", a.vtep, 4789, [vxlan] * 5)
        wait_until(lambda: net_counters(lab, "a")["rx_drop_cleartext"] >= before["rx_drop_cleartext"] + 5, 10,
                   "rx_drop_cleartext")
        time.sleep(0.5)
    assert not [p for p in cap.packets() if ICMP in p and p[ICMP].id == 0x4242], "cleartext reached the container"
    assert ping(ca, cb.ip), "and the encrypted network still works"


def test_replayed_and_tampered_esp_is_dropped_and_counted(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    ping_until(ca, cb.ip)
    a, b = lab.hosts["a"], lab.hosts["b"]
    with Capture(a.ns, str(tmp_path / "a.pcap"), bpf=f"udp and src host {a.vtep}") as cap:
        assert ping(ca, cb.ip, count=3)
    sent = [esp_payload(p) for p in esp_packets(cap.packets())]
    assert sent
    before = net_counters(lab, "b")
    send_udp(lab, "a", b.vtep, esp_wire.PORT, sent)  # from a's own address: only the window can tell
    wait_until(lambda: net_counters(lab, "b")["rx_drop_replay"] >= before["rx_drop_replay"] + len(sent), 10,
               "rx_drop_replay")
    forged = bytearray(sent[-1])
    forged[4:8] = (0x7FFFFFFF).to_bytes(4, "big")  # a fresh sequence number, but the ICV covers it
    send_udp(lab, "a", b.vtep, esp_wire.PORT, [bytes(forged)])
    wait_until(lambda: net_counters(lab, "b")["rx_drop_auth"] >= before["rx_drop_auth"] + 1, 10, "rx_drop_auth")
    assert ping(ca, cb.ip)


def test_an_sa_removed_by_sync_sas_is_dropped_and_rotation_overlap_works(make_lab: Callable[..., Lab],
                                                                        tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a, b = lab.hosts["a"], lab.hosts["b"]
    ping_until(ca, cb.ip)
    with Capture(a.ns, str(tmp_path / "old.pcap"), bpf=f"udp and src host {a.vtep}") as cap:
        assert ping(ca, cb.ip, count=2)
    old = [esp_payload(p) for p in esp_packets(cap.packets())]
    # rotation: b receives epoch 1 and 2 (overlap), a and b still send epoch 1 -> traffic flows
    net.epochs = (1, 2)
    with b.client() as c:
        c.sync_sas(VNI, lab.sas(net, "b", out_epoch=1))
    assert ping(ca, cb.ip, count=2)
    # everyone moves to epoch 2 for sending; b then drops epoch 1 from receive
    lab.program()
    with b.client() as c:
        c.sync_sas(VNI, lab.sas(net, "b", out_epoch=2, in_epochs=(2,)))
        assert {s["epoch"] for s in c.networks()["networks"][VNI]["sas"]} == {2}
    ping_until(ca, cb.ip)
    before_g = stats(lab, "b")["global"]
    send_udp(lab, "a", b.vtep, esp_wire.PORT, old)  # epoch 1 packets: their SPI is gone at b
    wait_until(lambda: stats(lab, "b")["global"]["rx_drop_no_sa"] >= before_g["rx_drop_no_sa"] + len(old), 10,
               "rx_drop_no_sa")
    # a sender still on epoch 1 (a stale host) gets nothing through either
    with a.client() as c:
        c.sync_sas(VNI, lab.sas(net, "a", out_epoch=1))
    assert not ping(ca, cb.ip, count=2)
    assert stats(lab, "b")["global"]["rx_drop_no_sa"] >= before_g["rx_drop_no_sa"] + len(old) + 2


def test_without_an_sa_nothing_leaves_and_it_is_counted(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab, program=False)
    ca, cb = net.containers
    a, b = lab.hosts["a"], lab.hosts["b"]
    # everything but the SAs: FDB, flood list, ARP, peers (a single-host network is the same case)
    for h, peer in (("a", b), ("b", a)):
        other = cb if h == "a" else ca
        with lab.hosts[h].client() as c:
            c.sync_peers([peer.vtep])
            c.sync_fdb(VNI, {other.mac: peer.vtep})
            c.sync_flood(VNI, [peer.vtep])
    with Capture(a.ns, str(tmp_path / "a.pcap"), bpf=f"src host {a.vtep}") as cap:
        assert not ping(ca, cb.ip, count=3)  # ARP floods and unicast both
        nsexec(ca.ns, "python3", "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               f"[s.sendto(b'x'*1200, ('{cb.ip}', 9)) for _ in range(50)]", check=False)
        time.sleep(0.5)
    assert cap.packets() == [], "an encrypted network without SAs sends nothing at all"
    assert net_counters(lab, "a")["tx_drop_no_sa"] >= 3
    with pytest.raises(FastpathControlError, match="not encrypted"):
        with a.client() as c:
            c.add_network(PLAIN_VNI, "", "tapx", 1400)
            c.sync_sas(PLAIN_VNI, lab.sas(net, "a"))
    with a.client() as c, pytest.raises(FastpathControlError, match="exists encrypted"):
        c.add_network(VNI, f"/run/netns/{net.sandboxes['a']}", f"tap{VNI}", net.mtu)
    with a.client() as c:
        c.remove_network(PLAIN_VNI)


def test_kill_9_restart_and_resync_never_repeat_a_sequence_number(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a = lab.hosts["a"]
    ping_until(ca, cb.ip)
    with Capture(a.ns, str(tmp_path / "a.pcap")) as cap:
        flood = nspopen(ca.ns, "ping", "-i", "0.01", "-s", "100", cb.ip, stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            lab.program()  # a resync of the same SAs keeps their sequence numbers
            time.sleep(0.5)
            lab.stop_fastpathd(a, sig=9)
            lab.start_fastpathd(a)  # restores network and SAs from its state file
            time.sleep(1.0)
            lab.program()  # overlayd re-syncs the same SAs
            time.sleep(1.0)
            lab.stop_fastpathd(a, sig=9)
            lab.start_fastpathd(a)
            lab.program()
            ping_until(ca, cb.ip)
            time.sleep(0.5)
        finally:
            flood.kill()
            flood.wait()
    pkts = udp_packets(cap.packets())
    assert not [p for p in pkts if 4789 in (p[UDP].sport, p[UDP].dport)], "cleartext VXLAN during restarts"
    mine = [spi_seq(p) for p in esp_packets(pkts) if p[IP].src == a.vtep]
    assert len(mine) > 100
    assert len(mine) == len(set(mine)), "an (SPI, sequence number) pair, i.e. a (key, IV) pair, was sent twice"
    seqs = [seq for _, seq in mine]
    assert max(seqs) > 2 * (1 << 21), "each restart starts above the reserved block of the previous life"


def test_sequence_exhaustion_fails_closed(make_lab: Callable[..., Lab], tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a = lab.hosts["a"]
    ping_until(ca, cb.ip)
    lab.stop_fastpathd(a)
    assert a.state
    with open(a.state, "rb") as f:
        state = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    # pretend the outbound SA already used all but 4 of its 2**32 - 1 sequence numbers
    state["esp_seq"] = {fp: 2**32 - 5 for fp in state["esp_seq"]}
    with open(a.state, "wb") as f:
        f.write(msgpack.packb(state, use_bin_type=True))
    lab.start_fastpathd(a)
    with Capture(a.ns, str(tmp_path / "a.pcap"), bpf=f"udp and src host {a.vtep}") as cap:
        ping(ca, cb.ip, count=8, timeout=5)
    sent = [spi_seq(p)[1] for p in esp_packets(cap.packets())]
    assert sent and max(sent) == 2**32 - 1 and len(sent) <= 4, sent
    assert net_counters(lab, "a")["tx_drop_seq_exhausted"] > 0


def test_a_packet_captured_before_a_receiver_restart_is_still_a_replay(make_lab: Callable[..., Lab],
                                                                         tmp_path) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a, b = lab.hosts["a"], lab.hosts["b"]
    ping_until(ca, cb.ip)
    with Capture(a.ns, str(tmp_path / "a.pcap"), bpf=f"udp and src host {a.vtep}") as cap:
        assert ping(ca, cb.ip, count=3)
    sent = [esp_payload(p) for p in esp_packets(cap.packets())]
    assert sent
    time.sleep(1.5)  # fastpathd records how far each inbound SA got about once a second
    lab.stop_fastpathd(b, sig=9)
    lab.start_fastpathd(b)  # the inbound SA comes back from the state file, window top included
    ping_until(ca, cb.ip)
    before = net_counters(lab, "b")
    send_udp(lab, "a", b.vtep, esp_wire.PORT, sent)
    wait_until(lambda: net_counters(lab, "b")["rx_drop_replay"] >= before["rx_drop_replay"] + len(sent), 10,
               "rx_drop_replay after the restart")


def test_sync_sas_refuses_bad_sets_and_keeps_what_stays(make_lab: Callable[..., Lab]) -> None:
    lab, net = encrypted_lab(make_lab)
    ca, cb = net.containers
    a = lab.hosts["a"]
    ping_until(ca, cb.ip)
    good = lab.sas(net, "a")
    with a.client() as c:
        seq0 = next(s["seq"] for s in c.networks()["networks"][VNI]["sas"] if s["dir"] == "out")
        inbound = next(s for s in good if s["dir"] == "in")
        twin = {**inbound, "peer": "198.18.0.99", "key": bytes(16)}  # another inbound SA, same SPI
        with pytest.raises(FastpathControlError, match=f"SPI 0x{inbound['spi']:08x} .* collides .*rotate"):
            c.sync_sas(VNI, [*good, twin])
        out = next(s for s in good if s["dir"] == "out")
        with pytest.raises(FastpathControlError, match="at most one outbound SA per peer"):
            c.sync_sas(VNI, [*good, {**out, "spi": out["spi"] ^ 1}])
        with pytest.raises(FastpathControlError, match="key must be 16 bytes"):
            c.sync_sas(VNI, [{**out, "key": b"short"}])
        assert ping(ca, cb.ip, count=2), "a refused sync changes nothing"
        assert c.sync_sas(VNI, good) == len(good)  # the same SAs again: state kept
        seq1 = next(s["seq"] for s in c.networks()["networks"][VNI]["sas"] if s["dir"] == "out")
    assert seq1 >= seq0 + 2, "a resync of the same SA never resets its sequence number"


def test_a_taken_esp_port_refuses_encrypted_networks_but_plain_ones_work(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    a = lab.add_host("a", "userspace", state=True)
    lab.add_host("b", "userspace", state=True)
    lab.stop_fastpathd(a)
    holder = nspopen(a.ns, "python3", "-c", "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                     "s.bind(('0.0.0.0', 4500)); print('ready', flush=True); time.sleep(120)",
                     stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"  # an IKE daemon, say
        lab.start_fastpathd(a)
        with a.client() as c:
            assert "4500" in c.offloads()["esp"]
        with pytest.raises(FastpathControlError, match="cannot be encrypted: no ESP socket .*--esp-port"):
            lab.add_network(VNI, ["a", "b"], encrypted=True)
        del lab.networks[VNI]  # refused: not programmed below
        plain = lab.add_network(PLAIN_VNI, ["a", "b"], index=2)
        ca, cb = lab.add_container(PLAIN_VNI, "a"), lab.add_container(PLAIN_VNI, "b")
        lab.program()
        ping_until(ca, cb.ip)
        assert plain.encrypted is False
    finally:
        holder.kill()
        holder.wait()


def test_without_gso_and_gro_and_with_two_workers_still_only_esp(make_lab: Callable[..., Lab], tmp_path) -> None:
    """The other transmit paths (one sendmsg per packet, no GRO trains) and the two-thread engine (the
    transmit thread seals while the receive thread opens) keep the same wire."""
    lab = make_lab()
    for h in ("a", "b"):
        lab.add_host(h, "userspace", state=True, fastpath_args=("--no-gso", "--no-gro", "--workers", "2"))
    net = lab.add_network(VNI, ["a", "b"], encrypted=True)
    ca, cb = lab.add_container(VNI, "a"), lab.add_container(VNI, "b")
    lab.program()
    ping_until(ca, cb.ip)
    with Capture(lab.hosts["a"].ns, str(tmp_path / "a.pcap")) as cap:
        tcp_transfer(ca, cb, 1 * MB)
        tcp_transfer(cb, ca, 1 * MB, port=5002)
    pkts = udp_packets(cap.packets())
    assert len(pkts) > 100 and all(p[UDP].dport == esp_wire.PORT for p in pkts)
    o = opener(lab, net)
    assert all(o.open(p)[VXLAN].vni == VNI for p in esp_packets(pkts))
    st = stats(lab, "a")
    assert st["global"]["tx_gso_sends"] == 0 and net_counters(lab, "a")["rx_drop_replay"] == 0


def test_a_flood_skips_the_peer_without_an_sa_and_seals_for_the_others(make_lab: Callable[..., Lab],
                                                                      tmp_path) -> None:
    lab, net = encrypted_lab(make_lab, hosts=("a", "b", "c"), arp=False)
    ca, cb, cc = net.containers
    a, c = lab.hosts["a"], lab.hosts["c"]
    ping_until(ca, cb.ip)
    with a.client() as cl:  # a loses its SAs for c (say c's key has not reached it yet)
        cl.sync_sas(VNI, [s for s in lab.sas(net, "a") if s["peer"] != c.vtep])
    before = net_counters(lab, "a")["tx_drop_no_sa"]
    with Capture(a.ns, str(tmp_path / "a.pcap"), bpf=f"src host {a.vtep}") as cap:
        nsexec(ca.ns, "ip", "neigh", "flush", "all")
        assert ping(ca, cb.ip, count=2)  # its ARP request is flooded: sealed for b, dropped for c
        assert not ping(ca, cc.ip, count=2)
    pkts = cap.packets()
    assert pkts and all(UDP in p and p[UDP].dport == esp_wire.PORT for p in pkts), "only ESP leaves a"
    assert not [p for p in pkts if p[IP].dst == c.vtep], "nothing at all went to the peer without an SA"
    assert net_counters(lab, "a")["tx_drop_no_sa"] > before
