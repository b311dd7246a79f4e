"""Kernel-mode overlay end to end: two host netns, a sandbox each, real pings between containers.

Verbs run "as the daemon" (inside each host netns); `ip`, `bridge` and `ping` check independently.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from overlaynet import kernel
from tests.support.kernel import (
    OVERLAY_MTU,
    VNI,
    Container,
    Host,
    Topology,
    as_daemon,
    attach,
    in_sandbox,
    ip,
    make_hosts,
    open_fds,
    ping,
    ping_until,
    program_remote,
    setup_network,
    two_host_overlay,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def topo(netns) -> Iterator[Topology]:
    topology = Topology()
    try:
        yield topology
    finally:
        topology.cleanup()


def ifindex(sandbox: str, ifname: str) -> int:
    return int(in_sandbox(sandbox, "ip", "-o", "link", "show", ifname).split(":")[0])


def unprogram(host: Host) -> list[kernel.Changes]:
    return [
        kernel.sync_fdb(host.sandbox, VNI, {}),
        kernel.sync_neigh(host.sandbox, VNI, {}),
        kernel.set_flood_list(host.sandbox, VNI, set()),
    ]


def test_ping_crosses_and_stops_when_entries_are_removed(netns, prefix: str, topo: Topology) -> None:
    hosts, (c1, c2) = two_host_overlay(netns, prefix, topo)
    assert ping_until(c1.ns, c2.ip)
    assert ping(c2.ns, c1.ip)

    # Independent view of what was programmed on host 1.
    fdb = in_sandbox(hosts[0].sandbox, "bridge", "fdb", "show", "dev", kernel.vxlan_name(VNI))
    assert f"{c2.mac} dst {hosts[1].underlay_ip}" in fdb and "self permanent" in fdb
    assert f"00:00:00:00:00:00 dst {hosts[1].underlay_ip}" in fdb
    neigh = in_sandbox(hosts[0].sandbox, "ip", "neigh", "show", "dev", kernel.vxlan_name(VNI))
    assert f"{c2.ip} lladdr {c2.mac} PERMANENT" in neigh
    assert kernel.list_fdb(hosts[0].sandbox, VNI) == [
        kernel.FdbEntry(kernel.FLOOD_MAC, hosts[1].underlay_ip),
        kernel.FdbEntry(c2.mac, hosts[1].underlay_ip),
    ]
    assert kernel.list_neigh(hosts[0].sandbox, VNI) == [kernel.NeighEntry(c2.ip, c2.mac)]
    # The container sees the overlay MTU and its MAC/IP.
    link = ip("-o", "addr", "show", "dev", "eth0", ns=c1.ns)
    assert f"inet {c1.ip}/24" in link
    assert f"mtu {OVERLAY_MTU}" in ip("-o", "link", "show", "eth0", ns=c1.ns)

    changes = as_daemon(hosts[0].ns, unprogram, hosts[0])
    assert [c.removed for c in changes] == [[c2.mac], [c2.ip], [hosts[1].underlay_ip]]
    assert kernel.list_fdb(hosts[0].sandbox, VNI) == []
    assert ping_until(c1.ns, c2.ip, ok=False)

    as_daemon(hosts[0].ns, program_remote, hosts[0], hosts[1], c2)
    assert ping_until(c1.ns, c2.ip)

    # Single-entry verbs: deleting the MAC entry and the flood list cuts unicast again.
    kernel.delete_fdb(hosts[0].sandbox, VNI, c2.mac)
    kernel.delete_fdb(hosts[0].sandbox, VNI, c2.mac)  # absent is fine
    kernel.set_flood_list(hosts[0].sandbox, VNI, set())
    assert ping_until(c1.ns, c2.ip, ok=False)
    kernel.set_fdb(hosts[0].sandbox, VNI, c2.mac, hosts[1].underlay_ip)
    assert ping_until(c1.ns, c2.ip)
    kernel.delete_neigh(hosts[0].sandbox, VNI, c2.ip)
    kernel.delete_neigh(hosts[0].sandbox, VNI, c2.ip)
    assert kernel.list_neigh(hosts[0].sandbox, VNI) == []
    kernel.set_neigh(hosts[0].sandbox, VNI, c2.ip, c2.mac)
    assert kernel.list_neigh(hosts[0].sandbox, VNI) == [kernel.NeighEntry(c2.ip, c2.mac)]


def test_ensure_twice_changes_nothing(netns, prefix: str, topo: Topology) -> None:
    hosts, (c1, c2) = two_host_overlay(netns, prefix, topo)
    host = hosts[0]
    before = {name: ifindex(host.sandbox, name) for name in ("ovbr0", kernel.vxlan_name(VNI))}

    assert as_daemon(host.ns, setup_network, host) is False
    info = as_daemon(host.ns, attach, host, c1)
    assert info.created is False and info.container_ifname == "eth0"
    assert kernel.sync_fdb(host.sandbox, VNI, {c2.mac: hosts[1].underlay_ip}) == kernel.Changes()
    assert kernel.sync_neigh(host.sandbox, VNI, {c2.ip: c2.mac}) == kernel.Changes()
    assert kernel.set_flood_list(host.sandbox, VNI, {hosts[1].underlay_ip}) == kernel.Changes()

    assert before == {name: ifindex(host.sandbox, name) for name in before}
    assert kernel.list_endpoint_links(host.sandbox) == {kernel.endpoint_prefix(c1.endpoint_id)}
    assert ping_until(c1.ns, c2.ip)


def test_restarted_daemon_adopts_without_disturbing_traffic(netns, prefix: str, topo: Topology) -> None:
    hosts, (c1, c2) = two_host_overlay(netns, prefix, topo)
    assert ping_until(c1.ns, c2.ip)
    count = 40
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", c1.ns, "ping", "-c", str(count), "-i", "0.05", "-W", "1", c2.ip],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # The "daemon" (its threads) is gone; a new one runs its whole reconcile pass twice.
        for _ in range(2):
            for host, container, remote, remote_c in (
                (hosts[0], c1, hosts[1], c2),
                (hosts[1], c2, hosts[0], c1),
            ):
                assert as_daemon(host.ns, setup_network, host) is False
                assert as_daemon(host.ns, attach, host, container).created is False
                as_daemon(host.ns, program_remote, host, remote, remote_c)
        out, _ = pinger.communicate(timeout=60)
    finally:
        pinger.kill()
        pinger.wait()
    assert re.search(rf"{count} packets transmitted, {count} received", out), out


def test_drifted_objects_are_repaired_or_replaced(netns, prefix: str, topo: Topology) -> None:
    hosts, (c1, c2) = two_host_overlay(netns, prefix, topo)
    host = hosts[0]
    vx = kernel.vxlan_name(VNI)
    # Mutable drift (MTU) is fixed in place: same device.
    index = ifindex(host.sandbox, vx)
    in_sandbox(host.sandbox, "ip", "link", "set", vx, "mtu", "1400")
    assert as_daemon(host.ns, setup_network, host) is False
    assert ifindex(host.sandbox, vx) == index
    assert f"mtu {OVERLAY_MTU}" in in_sandbox(host.sandbox, "ip", "-o", "link", "show", vx)

    # Identity drift (a same-named VXLAN with learning on, made inside the sandbox) is replaced.
    in_sandbox(host.sandbox, "ip", "link", "del", vx)
    in_sandbox(host.sandbox, "ip", "link", "add", vx, "type", "vxlan", "id", str(VNI), "dstport", "4789")
    assert as_daemon(host.ns, setup_network, host) is True
    details = in_sandbox(host.sandbox, "ip", "-d", "link", "show", vx)
    assert "nolearning" in details and "proxy" in details and "link-netns" in details
    as_daemon(host.ns, program_remote, host, hosts[1], c2)
    assert ping_until(c1.ns, c2.ip)

    # The container end drifted (MAC, address): brought back.
    ip("link", "set", "eth0", "address", "02:00:00:00:00:99", ns=c1.ns)
    ip("addr", "add", "198.19.1.99/24", "dev", "eth0", ns=c1.ns)
    assert as_daemon(host.ns, attach, host, c1).created is False
    shown = ip("-o", "addr", "show", "dev", "eth0", ns=c1.ns)
    assert "198.19.1.99" not in shown and f"{c1.ip}/24" in shown
    assert c1.mac in ip("-o", "link", "show", "eth0", ns=c1.ns)


def test_stale_same_vni_vxlan_in_host_netns_is_replaced(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    # A crash of some older layout left the device in the host netns, up (its UDP socket bound).
    stale = kernel.vxlan_name(VNI)
    ip(
        "link",
        "add",
        stale,
        "type",
        "vxlan",
        "id",
        str(VNI),
        "dstport",
        "4789",
        "local",
        host.underlay_ip,
        ns=host.ns,
    )
    ip("link", "set", stale, "up", ns=host.ns)

    assert as_daemon(host.ns, setup_network, host) is True
    assert ip("link", "show", stale, ns=host.ns, check=False) == ""
    assert "link-netns" in in_sandbox(host.sandbox, "ip", "-d", "link", "show", stale)


def test_foreign_same_vni_vxlan_is_reported_not_deleted(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    ip("link", "add", "kforeign", "type", "vxlan", "id", str(VNI), "dstport", "4789", ns=host.ns)
    with pytest.raises(kernel.KernelError, match="kforeign.*did not create"):
        as_daemon(host.ns, setup_network, host)
    assert "kforeign" in ip("link", "show", "kforeign", ns=host.ns)


def test_remove_veth_is_idempotent(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    container = Container(netns("c"), f"{prefix}rmaaaaaaaaaa", "198.19.1.20", "02:42:c6:13:01:20")
    as_daemon(host.ns, setup_network, host)
    spec = kernel.VethSpec(
        container.endpoint_id,
        f"/run/netns/{container.ns}",
        "eth0",
        container.mac,
        f"{container.ip}/24",
        OVERLAY_MTU,
        gateway="198.19.1.1",
    )
    for _ in range(2):
        as_daemon(host.ns, kernel.ensure_veth, host.sandbox, spec)
    assert ip("route", "show", "default", ns=container.ns).split()[:5] == [
        "default",
        "via",
        "198.19.1.1",
        "dev",
        "eth0",
    ]
    assert kernel.list_endpoint_links(host.sandbox) == {kernel.endpoint_prefix(container.endpoint_id)}

    assert as_daemon(host.ns, kernel.remove_veth, host.sandbox, container.endpoint_id) is True
    assert as_daemon(host.ns, kernel.remove_veth, host.sandbox, container.endpoint_id) is False
    assert kernel.list_endpoint_links(host.sandbox) == set()
    assert ip("link", "show", "eth0", ns=container.ns, check=False) == ""
    kernel.remove_sandbox(host.sandbox)
    assert as_daemon(host.ns, kernel.remove_veth, host.sandbox, container.endpoint_id) is False
    assert kernel.list_endpoint_links(host.sandbox) == set()


def test_docker_mode_leaves_container_end_in_host_netns(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    container_ns = netns("c")
    endpoint_id = f"{prefix}dkaaaaaaaaaa"
    mac = "02:42:c6:13:01:30"
    spec = kernel.VethSpec(endpoint_id, None, "eth0", mac, "198.19.1.30/24", OVERLAY_MTU)
    as_daemon(host.ns, setup_network, host)
    info = as_daemon(host.ns, kernel.ensure_veth, host.sandbox, spec)
    derived = kernel.container_veth_name(endpoint_id)
    assert info.container_ifname == derived and info.container_netns is None and info.created
    shown = ip("-o", "link", "show", derived, ns=host.ns)
    assert mac in shown and f"mtu {OVERLAY_MTU}" in shown
    assert "inet " not in ip("-o", "addr", "show", "dev", derived, ns=host.ns)  # Docker sets the IP

    # Docker moves it into the container; a restarted daemon still adopts the pair.
    ip("link", "set", derived, "netns", container_ns, ns=host.ns)
    assert as_daemon(host.ns, kernel.ensure_veth, host.sandbox, spec).created is False
    # Docker moves it back to the host netns on teardown; remove_veth cleans everything up.
    ip("link", "set", derived, "netns", host.ns, ns=container_ns)
    assert as_daemon(host.ns, kernel.remove_veth, host.sandbox, endpoint_id) is True
    assert ip("link", "show", derived, ns=host.ns, check=False) == ""


def test_ensure_veth_errors_are_clear(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    container_ns = netns("c")
    as_daemon(host.ns, setup_network, host)
    missing = kernel.VethSpec(
        f"{prefix}eraaaaaaaaaa", f"{prefix}-gone", "eth0", "02:42:c6:13:01:40", None, 1450
    )
    with pytest.raises(kernel.KernelError, match=f"network namespace '{prefix}-gone' not found"):
        as_daemon(host.ns, kernel.ensure_veth, host.sandbox, missing)

    ip("link", "add", "eth0", "type", "veth", "peer", "name", "other", ns=container_ns)
    taken = kernel.VethSpec(f"{prefix}eraaaaaaaaaa", container_ns, "eth0", "02:42:c6:13:01:40", None, 1450)
    with pytest.raises(kernel.KernelError, match="eth0 already exists"):
        as_daemon(host.ns, kernel.ensure_veth, host.sandbox, taken)
    assert kernel.list_endpoint_links(host.sandbox) == set()
    assert "other" in ip("link", "show", "other", ns=container_ns)


def test_ensure_port_moves_a_tap_onto_the_bridge(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    tap = kernel.tap_name(VNI)
    kernel.ensure_sandbox(host.sandbox)
    kernel.ensure_bridge(host.sandbox, OVERLAY_MTU)
    ip("tuntap", "add", "mode", "tap", "name", tap, ns=host.ns)
    as_daemon(host.ns, kernel.ensure_port, host.sandbox, tap, OVERLAY_MTU)
    as_daemon(host.ns, kernel.ensure_port, host.sandbox, tap, OVERLAY_MTU)
    shown = in_sandbox(host.sandbox, "ip", "-o", "link", "show", tap)
    assert "master ovbr0" in shown and f"mtu {OVERLAY_MTU}" in shown
    with pytest.raises(kernel.KernelError, match="not found"):
        as_daemon(host.ns, kernel.ensure_port, host.sandbox, "knosuch", None)


def test_underlay_facts(netns, prefix: str, topo: Topology) -> None:
    host, _ = make_hosts(netns, prefix, topo)
    assert as_daemon(host.ns, kernel.underlay_mtu, host.underlay_ip) == 1500
    assert as_daemon(host.ns, kernel.underlay_device, host.underlay_ip) == "u"
    assert as_daemon(host.ns, kernel.is_local_address, host.underlay_ip) is True
    assert as_daemon(host.ns, kernel.is_local_address, "198.18.9.9") is False
    with pytest.raises(kernel.KernelError, match="not configured on any interface"):
        as_daemon(host.ns, kernel.underlay_mtu, "198.18.9.9")

    # Pinning the VXLAN device to the underlay device is part of its identity.
    spec = kernel.VxlanSpec(VNI, host.underlay_ip, mtu=OVERLAY_MTU, underlay_dev="u")
    kernel.ensure_sandbox(host.sandbox)
    kernel.ensure_bridge(host.sandbox, OVERLAY_MTU)
    assert as_daemon(host.ns, kernel.ensure_vxlan, host.sandbox, spec) is True
    assert as_daemon(host.ns, kernel.ensure_vxlan, host.sandbox, spec) is False
    details = in_sandbox(host.sandbox, "ip", "-d", "link", "show", kernel.vxlan_name(VNI))
    assert "local 198.18.0.1 dev" in details, details
    kernel.remove_vxlan(host.sandbox, VNI)
    kernel.remove_vxlan(host.sandbox, VNI)
    assert kernel.vxlan_name(VNI) not in in_sandbox(host.sandbox, "ip", "link")


def test_vxlan_whose_socket_is_in_another_host_netns_is_replaced(netns, prefix: str, topo: Topology) -> None:
    first, second = make_hosts(netns, prefix, topo)
    assert as_daemon(first.ns, setup_network, first) is True
    # Same sandbox, managed from another host netns: the UDP socket must move there.
    assert as_daemon(second.ns, setup_network, first) is True
    assert as_daemon(second.ns, setup_network, first) is False
    assert f"link-netns {second.ns}" in in_sandbox(
        first.sandbox, "ip", "-d", "link", "show", kernel.vxlan_name(VNI)
    )


def test_vxlan_table_writes_the_difference_and_rereads_only_without_previous(netns, prefix: str,
                                                                           topo: Topology) -> None:
    hosts, (c1, c2) = two_host_overlay(netns, prefix, topo)
    sb, remote = hosts[0].sandbox, hosts[1].underlay_ip
    table = kernel.VxlanTable.of({c2.mac: remote}, {c2.ip: c2.mac}, {remote})
    assert kernel.program_vxlan_table(sb, VNI, table, None) == 0  # already so (two_host_overlay)
    # a new remote MAC: only it is written, from what was written before (no read)
    more = kernel.VxlanTable.of({c2.mac: remote, "02:00:00:00:aa:01": remote},
                                {c2.ip: c2.mac, "198.19.1.250": "02:00:00:00:aa:01"}, {remote})
    assert kernel.program_vxlan_table(sb, VNI, more, table) == 2
    assert kernel.FdbEntry("02:00:00:00:aa:01", remote) in kernel.list_fdb(sb, VNI)
    # drift behind our back: with `previous` the pass trusts it (cheap) ...
    kernel.delete_fdb(sb, VNI, c2.mac)
    assert kernel.program_vxlan_table(sb, VNI, more, more) == 0
    assert kernel.FdbEntry(c2.mac, remote) not in kernel.list_fdb(sb, VNI)
    # ... and a pass without it (a forced resync) reads the kernel and repairs it
    assert kernel.program_vxlan_table(sb, VNI, more, None) == 1
    assert kernel.list_fdb(sb, VNI) == sorted([kernel.FdbEntry(kernel.FLOOD_MAC, remote),
                                               kernel.FdbEntry(c2.mac, remote),
                                               kernel.FdbEntry("02:00:00:00:aa:01", remote)],
                                              key=lambda e: (e.mac, e.vtep))
    assert ping_until(c1.ns, c2.ip)
    # back to the start: the extra MAC, its neighbour entry and nothing else go
    assert kernel.program_vxlan_table(sb, VNI, table, more) == 2
    assert kernel.list_neigh(sb, VNI) == [kernel.NeighEntry(c2.ip, c2.mac)]


_netlink_sockets: list[int] = []  # AF_NETLINK sockets Python opened while counting (socket.__new__ audit events)
_counting: list[bool] = [False]


def _count_netlink(event: str, args: tuple[object, ...]) -> None:
    if _counting[0] and event == "socket.__new__" and args[1] == socket.AF_NETLINK:
        _netlink_sockets.append(1)


def attach_in_one_batch(host: Host, container: Container) -> kernel.VethInfo:
    """An attach's kernel work as overlayd does it: the network's objects and the veth in one batch."""
    with kernel.batch():
        setup_network(host)
        return attach(host, container)


def test_an_attach_in_one_batch_opens_one_netlink_handle_per_namespace(netns, prefix: str, topo: Topology) -> None:
    """Each netlink handle is a private thread and a new IPRoute (docs/performance.md): an attach
    used to open one per verb. In a batch it is one each for the host, the sandbox and the container,
    and the veth still comes out complete: on the bridge and up, the container end up with its address."""
    host, _ = make_hosts(netns, prefix, topo)
    as_daemon(host.ns, setup_network, host)
    first, second = (Container(netns("c"), f"{prefix}b{i}aaaaaaaaaa", f"198.19.1.{40 + i}", f"02:42:c6:13:01:4{i}")
                     for i in range(2))
    sys.addaudithook(_count_netlink)  # for the rest of the process; counts only while _counting says so
    fds = open_fds()
    _counting[0] = True
    try:
        as_daemon(host.ns, setup_network, host)
        as_daemon(host.ns, attach, host, first)
        unbatched = len(_netlink_sockets)
        _netlink_sockets.clear()
        info = as_daemon(host.ns, attach_in_one_batch, host, second)
        batched = len(_netlink_sockets)
    finally:
        _counting[0] = False
    assert info.created
    assert batched == 3 and unbatched >= 6, (unbatched, batched)
    assert open_fds() == fds  # the batch closed its handles
    for container in (first, second):
        host_end = in_sandbox(host.sandbox, "ip", "-o", "link", "show", kernel.host_veth_name(container.endpoint_id))
        assert f"master {kernel.BRIDGE_NAME}" in host_end and ",UP" in host_end, host_end
        eth0 = ip("-o", "addr", "show", "dev", "eth0", ns=container.ns)
        assert f"inet {container.ip}/24" in eth0 and ",UP" in ip("-o", "link", "show", "eth0", ns=container.ns)
