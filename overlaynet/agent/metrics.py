"""overlayd's Prometheus metrics (prometheus-client), served on the metrics address.

Two kinds:
- live instruments the daemon updates as things happen (API requests, reconcile durations), and
  prometheus-client's process, platform and GC collectors;
- everything else is read on scrape from counters that exist anyway: the fast path's per-network
  and global counters (atomics in fastpathd, read through its control socket only when Prometheus
  asks), gossip's counters, the tables, the agent's programming counters, DNS's counters. Nothing
  is counted twice and nothing is added to the packet path: a scrape costs one control-socket
  round trip to fastpathd, however much traffic flows.

Names follow Prometheus conventions: `overlaynet_` prefix, `_total` for counters, base units
(bytes, seconds), labels `network` (with `vni`), `direction`, `reason`, `state`, `route`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from overlaynet import __version__

disable_created_metrics()  # no `_created` twin of every counter: noise for an operator, cost for Prometheus
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

API_REQUESTS = Counter("overlaynet_api_requests", "REST API requests by route and HTTP status",
                       ["route", "method", "code"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("overlaynet_reconcile_duration_seconds", "Time a full reconciliation took",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                              registry=REGISTRY)
RECONCILE_ERRORS = Counter("overlaynet_reconcile_errors", "Errors met by reconciliations", registry=REGISTRY)

# The fast path's per-network counters, by what they mean to an operator.
_NET_TRAFFIC = {"rx_packets": ("packets", "rx"), "tx_packets": ("packets", "tx"),
                "rx_bytes": ("bytes", "rx"), "tx_bytes": ("bytes", "tx")}
_NET_DROPS = {"rx_drop_bad_sender": "bad_sender", "rx_drop_malformed": "rx_malformed",
              "rx_drop_local_source": "local_source", "rx_drop_peer_bum": "peer_bum_limit", "rx_csum_bad": "bad_checksum",
              "rx_tap_errors": "tap_write_error", "tx_drop_no_dest": "no_destination",
              "tx_drop_malformed": "tx_malformed", "tx_errors": "send_error"}
_GLOBAL_DROPS = {"rx_drop_unknown_vni": "unknown_vni", "rx_drop_malformed": "rx_malformed",
                 "rx_drop_truncated": "truncated", "rx_errors": "receive_error", "tx_errors": "send_error"}
_DEVICE_DROPS = {"rx_dropped": "device_rx_dropped", "tx_dropped": "device_tx_dropped",
                 "rx_errors": "receive_error", "tx_errors": "send_error"}  # the kernel VXLAN device's
# Same reasons as the fast path's for the same drops.
_KERNEL_DROPS = {"vxlan_non_member_drops": "bad_sender", "vxlan_peer_bum_drops": "peer_bum_limit"}
_GOSSIP_DROPS = ("malformed", "oversize", "unknown_version", "unknown_type", "misdirected", "internal_errors")
_GOSSIP_EVENTS = ("probes", "probe_failures", "indirect_probes", "suspects", "deaths", "refutes",
                  "key_ops_applied", "key_ops_rejected", "tombstones_expired", "reaped")
_DNS_RESULTS = {"answered": "answered", "nxdomain": "nxdomain", "refused": "refused", "malformed": "malformed",
                "errors": "error"}


@dataclass
class Snapshot:
    """What the agent knows at scrape time (gathered off the event loop's hot paths by the agent)."""
    dataplane: str
    dataplane_stats: dict[str, Any] | None  # None: the fast path did not answer
    network_names: dict[str, str]  # VNI (as text) -> network name
    gossip: dict[str, Any]
    members_by_state: dict[str, int]
    tables: dict[str, int]
    networks: int
    endpoints: int
    program: dict[str, int]
    dns: dict[str, Any]
    degraded: bool
    unreadable_rows: dict[str, int] = field(default_factory=dict)  # table -> rows left out (a peer's bug)
    extra: dict[str, Any] = field(default_factory=dict)


class SnapshotCollector(Collector):
    """Turns the latest Snapshot into metric families; the metrics server sets it just before a scrape."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        info = InfoMetricFamily("overlaynet_build", "overlaynet's version and this host's dataplane")
        info.add_metric([], {"version": __version__, "dataplane": s.dataplane})
        yield info
        yield GaugeMetricFamily("overlaynet_health_degraded", "1 while /healthz says degraded",
                                value=int(s.degraded))
        yield from _dataplane(s)
        yield from _gossip(s)
        tables = GaugeMetricFamily("overlaynet_table_records", "Records in a replicated table", labels=["table"])
        for table, n in sorted(s.tables.items()):
            tables.add_metric([table], n)
        yield tables
        unreadable = GaugeMetricFamily("overlaynet_table_rows_unreadable",
                                       "Rows of a replicated table that are not records this host can read "
                                       "(a peer's bug); left out of everything it programs", labels=["table"])
        for table, n in sorted(s.unreadable_rows.items()):
            unreadable.add_metric([table], n)
        yield unreadable
        yield GaugeMetricFamily("overlaynet_networks", "Networks in the cluster", value=s.networks)
        yield GaugeMetricFamily("overlaynet_endpoints", "Endpoints on this host", value=s.endpoints)
        yield CounterMetricFamily("overlaynet_program_passes", "Passes pushing forwarding state into the dataplane",
                                  value=s.program.get("programmed_passes", 0))
        yield CounterMetricFamily("overlaynet_program_entries_changed", "Forwarding entries added, changed or removed",
                                  value=s.program.get("entries_changed", 0))
        yield CounterMetricFamily("overlaynet_program_errors", "Failed attempts to program the dataplane",
                                  value=s.program.get("program_errors", 0))
        dns = CounterMetricFamily("overlaynet_dns_queries", "DNS queries answered on the networks' gateways",
                                  labels=["result"])
        for key, result in _DNS_RESULTS.items():
            dns.add_metric([result], s.dns.get(key, 0))
        yield dns
        yield GaugeMetricFamily("overlaynet_dns_servers", "DNS servers listening (one per network with a gateway)",
                                value=len(s.dns.get("servers", [])))


def _guard_drops(s: Snapshot, drops: CounterMetricFamily) -> None:
    """The first-hop guard's drops (nftables counters in each sandbox, both dataplanes)."""
    for vni, reasons in sorted(((s.dataplane_stats or {}).get("port_drops") or {}).items(), key=lambda kv: int(kv[0])):
        name = s.network_names.get(str(vni), "")
        for reason, packets in sorted(reasons.items()):
            drops.add_metric([name, str(vni), f"guard_{reason}"], packets)


def _drops_family() -> CounterMetricFamily:
    return CounterMetricFamily("overlaynet_dataplane_drops", "Packets dropped, by reason: the fast path's, the "
                               "kernel filters' (guard_*: a container's first hop); network empty: not "
                               "attributable to a network", labels=["network", "vni", "reason"])


def _traffic(s: Snapshot) -> Iterator[Metric]:
    """Per-network packets and bytes: the fast path's counters, or the kernel's VXLAN devices'."""
    packets = CounterMetricFamily("overlaynet_dataplane_packets", "Packets through the dataplane (inner frames)",
                                  labels=["network", "vni", "direction"])
    nbytes = CounterMetricFamily("overlaynet_dataplane_bytes", "Bytes through the dataplane (inner frames)",
                                 labels=["network", "vni", "direction"])
    for vni, counters in _networks(s):
        name = s.network_names.get(str(vni), "")
        for key, (kind, direction) in _NET_TRAFFIC.items():
            (packets if kind == "packets" else nbytes).add_metric([name, str(vni), direction], counters.get(key, 0))
    yield packets
    yield nbytes


def _networks(s: Snapshot) -> list[tuple[Any, dict[str, int]]]:
    return sorted(((s.dataplane_stats or {}).get("networks") or {}).items(), key=lambda kv: int(kv[0]))


def _dataplane(s: Snapshot) -> Iterator[Metric]:
    if s.dataplane != "userspace":
        yield from _traffic(s)
        yield from _kernel_dataplane(s)
        return
    yield GaugeMetricFamily("overlaynet_dataplane_up", "1 when fastpathd answers its control socket",
                            value=int(s.dataplane_stats is not None))
    if s.dataplane_stats is None:
        return
    yield from _traffic(s)
    drops = _drops_family()
    for vni, counters in _networks(s):
        name = s.network_names.get(str(vni), "")
        for key, reason in _NET_DROPS.items():
            drops.add_metric([name, str(vni), reason], counters.get(key, 0))
    glob = s.dataplane_stats.get("global") or {}
    for key, reason in _GLOBAL_DROPS.items():
        drops.add_metric(["", "", reason], glob.get(key, 0))
    _guard_drops(s, drops)
    yield drops


def _kernel_dataplane(s: Snapshot) -> Iterator[Metric]:
    """Kernel mode's drops: the VXLAN devices' own, and the kernel filters', e.g. VXLAN from a host
    that is not a member (an nftables counter)."""
    drops = _drops_family()
    for key, reason in _KERNEL_DROPS.items():
        if s.dataplane_stats is not None and key in s.dataplane_stats:
            drops.add_metric(["", "", reason], s.dataplane_stats[key])
    for vni, counters in _networks(s):
        name = s.network_names.get(str(vni), "")
        for key, reason in _DEVICE_DROPS.items():
            drops.add_metric([name, str(vni), reason], counters.get(key, 0))
    _guard_drops(s, drops)
    yield drops


def _gossip(s: Snapshot) -> Iterator[Metric]:
    g = s.gossip
    members = GaugeMetricFamily("overlaynet_gossip_members", "Cluster members by state, as this host sees them",
                                labels=["state"])
    for state in ("alive", "suspect", "dead", "left"):
        members.add_metric([state], s.members_by_state.get(state, 0))
    yield members
    messages = CounterMetricFamily("overlaynet_gossip_messages", "Gossip UDP packets", labels=["direction"])
    messages.add_metric(["in"], g.get("packets_in", 0))
    messages.add_metric(["out"], g.get("packets_out", 0))
    yield messages
    gbytes = CounterMetricFamily("overlaynet_gossip_bytes", "Gossip UDP bytes", labels=["direction"])
    gbytes.add_metric(["in"], g.get("bytes_in", 0))
    gbytes.add_metric(["out"], g.get("bytes_out", 0))
    yield gbytes
    yield CounterMetricFamily("overlaynet_gossip_auth_failures", "Gossip messages that failed authentication "
                              "(a key this host does not have, or tampering)", value=g.get("auth_failed", 0))
    yield CounterMetricFamily("overlaynet_gossip_push_pulls", "Full-state exchanges (TCP anti-entropy)",
                              value=g.get("push_pulls", 0))
    dropped = CounterMetricFamily("overlaynet_gossip_dropped_messages", "Gossip messages dropped, by reason",
                                  labels=["reason"])
    for reason in _GOSSIP_DROPS:
        dropped.add_metric([reason], g.get(reason, 0))
    yield dropped
    events = CounterMetricFamily("overlaynet_gossip_events", "SWIM protocol events", labels=["event"])
    for event in _GOSSIP_EVENTS:
        events.add_metric([event], g.get(event, 0))
    yield events


SNAPSHOT = SnapshotCollector()
REGISTRY.register(SNAPSHOT)
