"""The scrape's text for both dataplanes, parsed back with prometheus-client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from overlaynet.agent.metrics import Snapshot, SnapshotCollector

pytestmark = pytest.mark.unit


def scrape(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    collector = SnapshotCollector()
    collector.snapshot = snapshot
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def snapshot(dataplane: str, stats: dict | None) -> Snapshot:
    return Snapshot(dataplane=dataplane, dataplane_stats=stats, network_names={"7": "blue"}, gossip={"auth_failed": 3},
                    members_by_state={"alive": 2, "dead": 1}, tables={"endpoints": 4}, networks=1, endpoints=2,
                    program={"program_errors": 1}, dns={"answered": 5, "servers": []}, degraded=True)


def test_kernel_dataplane_exports_its_filter_drops():
    m = scrape(snapshot("kernel", {"vxlan_non_member_drops": 9, "port_drops": {"7": {"mac_spoof": 2}}}))
    assert m[("overlaynet_dataplane_drops_total", (("network", ""), ("reason", "bad_sender"), ("vni", "")))] == 9
    assert m[("overlaynet_dataplane_drops_total", (("network", "blue"), ("reason", "guard_mac_spoof"), ("vni", "7")))] == 2
    assert not any(name == "overlaynet_dataplane_up" for name, _ in m)
    assert m[("overlaynet_gossip_auth_failures_total", ())] == 3
    assert m[("overlaynet_health_degraded", ())] == 1
    assert not any(name == "overlaynet_table_rows_unreadable" for name, _ in m)  # nothing to say: no sample


def test_unreadable_table_rows_are_a_gauge_per_table():
    s = snapshot("kernel", {})
    s.unreadable_rows = {"endpoints": 2, "networks": 0}
    m = scrape(s)
    assert m[("overlaynet_table_rows_unreadable", (("table", "endpoints"),))] == 2
    assert m[("overlaynet_table_rows_unreadable", (("table", "networks"),))] == 0


def test_fastpath_down_is_up_zero_without_invented_counters():
    m = scrape(snapshot("userspace", None))
    assert m[("overlaynet_dataplane_up", ())] == 0
    assert not any(name.startswith("overlaynet_dataplane_packets") for name, _ in m)


def test_userspace_counters_are_labelled_by_network_name():
    stats = {"networks": {7: {"rx_packets": 10, "tx_bytes": 1500, "tx_drop_no_dest": 2}}, "global": {"rx_drop_unknown_vni": 4}}
    m = scrape(snapshot("userspace", stats))
    assert m[("overlaynet_dataplane_packets_total", (("direction", "rx"), ("network", "blue"), ("vni", "7")))] == 10
    assert m[("overlaynet_dataplane_bytes_total", (("direction", "tx"), ("network", "blue"), ("vni", "7")))] == 1500
    assert m[("overlaynet_dataplane_drops_total", (("network", "blue"), ("reason", "no_destination"), ("vni", "7")))] == 2
    assert m[("overlaynet_dataplane_drops_total", (("network", ""), ("reason", "unknown_vni"), ("vni", "")))] == 4
