"""The agent's window onto the gossip layer: networks, endpoints and address-block claims.

Three replicated tables:
  networks  key = name                      value = Network.to_dict()
  endpoints key = endpoint id               value = EndpointRecord.to_record()
  ipam      key = "<network>|<block>|<host>" value = {network, block, host, claimed_at}
            key = "<network>|addr|<ip>|<host>" value = {network, address, host, claimed_at}
            (an address reserved through the Docker IPAM driver before its endpoint exists)
  netkeys   key = "<network>|<epoch>"       value = an encrypted network's secret (agent/netkeys.py)

Endpoints and claims are written by the host they belong to, so the gossip layer hides them while
that host is dead and brings them back if it returns. Networks are shared objects: they must
outlive the host that created them, so they are read from the raw records (dead writers included),
and a live host re-asserts a network whose writer died (see `orphaned_networks`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overlaynet.gossip.state import MemberInfo
from overlaynet.gossip.tables import Record
from overlaynet.gossip.transport import GossipNode
from overlaynet.model import Endpoint, EndpointRecord, Network

NETWORKS = "networks"
ENDPOINTS = "endpoints"
IPAM = "ipam"
NETKEYS = "netkeys"

log = logging.getLogger("overlaynet.agent")


def in_network(records: Iterable[EndpointRecord], network: str) -> list[EndpointRecord]:
    """The endpoint records (as in the `endpoints` table) of one network."""
    return [ep for ep in records if ep.network == network]


@dataclass(frozen=True)
class BlockClaim:
    network: str
    block: str
    host: str
    claimed_at: float
    live: bool  # the claiming host is alive (or only suspected)
    dead_since: float | None  # wall-clock time its host was declared dead/left, if it is


class Cluster:
    def __init__(self, node: GossipNode, name: str) -> None:
        self.node = node
        self.name = name
        # endpoint id -> (the stored value, its decoding): a stored value is never changed in place
        # (a new version is a new dict), so the value's identity says whether the decoding is current.
        self._decoded: dict[str, tuple[dict[str, Any], EndpointRecord | None]] = {}
        self._ignored: dict[tuple[str, str], dict[str, Any]] = {}  # (table, key) -> a row logged as unreadable

    # ---- members ---------------------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        return self.node.members()

    def live_members(self) -> list[MemberInfo]:
        return [m for m in self.node.members() if m.state in ("alive", "suspect")]

    def others_alive(self) -> bool:
        return any(m.name != self.name for m in self.live_members())

    # ---- networks --------------------------------------------------------------------------

    def _records(self, table: str) -> list[Record]:
        return self.node.records(table)

    def _network(self, rec: Record) -> Network | None:
        assert rec.value is not None
        try:
            return Network.from_dict(rec.value)
        except ValueError as e:
            if self._ignored.get((NETWORKS, rec.key)) is not rec.value:  # say it once per version
                self._ignored[(NETWORKS, rec.key)] = rec.value
                log.warning("event=network-record-ignored key=%s owner=%s error=%s", rec.key, rec.owner, e)
            return None

    def networks(self) -> dict[str, Network]:
        out = {}
        for rec in self._records(NETWORKS):
            net = self._network(rec) if rec.value is not None else None
            if net is not None:
                out[rec.key] = net
        return out

    def network_deleted(self, name: str) -> bool:
        """A tombstone says the network was removed (while we were away, perhaps)."""
        rec = self.node.record(NETWORKS, name)
        return rec is not None and rec.value is None

    def orphaned_networks(self) -> list[Network]:
        """Networks whose last writer is not alive, that this host should re-assert.

        Only the live host with the smallest name does it, so there is normally one writer; if two
        do, last-writer-wins keeps one identical copy.
        """
        live = {m.name for m in self.live_members()}
        if not live or min(live) != self.name:
            return []
        nets = [self._network(rec) for rec in self._records(NETWORKS) if rec.value is not None and rec.owner not in live]
        return [net for net in nets if net is not None]

    def put_network(self, net: Network) -> None:
        self.node.set(NETWORKS, net.name, net.to_dict())

    def delete_network(self, name: str) -> None:
        self.node.delete(NETWORKS, name)

    # ---- encrypted networks' secrets (raw records: a secret outlives the host that wrote it) ----

    def netkey_records(self, network: str) -> list[dict[str, Any]]:
        return [dict(rec.value) for rec in self._records(NETKEYS)
                if rec.value is not None and rec.key.startswith(f"{network}|")]

    def put_netkey(self, network: str, epoch: int, value: dict[str, Any]) -> None:
        self.node.set(NETKEYS, f"{network}|{epoch}", value)

    def delete_netkey(self, network: str, epoch: int) -> None:
        self.node.delete(NETKEYS, f"{network}|{epoch}")

    # ---- endpoints -------------------------------------------------------------------------

    def _endpoints(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, EndpointRecord]:
        """Decoded rows, each stored value decoded once however often it is read (a program pass
        reads the table several times per network)."""
        decoded, out = self._decoded, {}
        for key, value in rows:
            cached = decoded.get(key)
            if cached is None or cached[0] is not value:
                try:
                    record: EndpointRecord | None = EndpointRecord.from_record(value)
                except ValueError as e:
                    record = None  # a peer's bug: left out of everything this host programs
                    log.warning("event=endpoint-record-ignored key=%s error=%s", key[:12], e)
                cached = decoded[key] = (value, record)
            if cached[1] is not None:
                out[key] = cached[1]
        return out

    def endpoints(self) -> dict[str, EndpointRecord]:
        """Every visible endpoint in the cluster (hosts that are alive), ours included."""
        rows = self.node.table(ENDPOINTS)
        out = self._endpoints(rows.items())
        if len(self._decoded) > len(rows):  # forget removed rows (hidden ones are decoded again on return)
            self._decoded = {k: v for k, v in self._decoded.items() if k in rows}
        return out

    def endpoints_of(self, hosts: set[str]) -> list[EndpointRecord]:
        """Stored endpoints written by these hosts, even while the gossip layer hides them."""
        return list(self._endpoints((rec.key, rec.value) for rec in self._records(ENDPOINTS)
                                    if rec.value is not None and rec.owner in hosts).values())

    def unreadable_rows(self) -> dict[str, int]:
        """Visible rows left out because they are not records (metrics: a peer runs a buggy version)."""
        self.endpoints()
        rows = self.node.table(ENDPOINTS)
        return {ENDPOINTS: sum(1 for key in rows if self._decoded[key][1] is None),
                NETWORKS: sum(1 for rec in self._records(NETWORKS)
                              if rec.value is not None and self._network(rec) is None)}

    def my_endpoint_ids(self) -> set[str]:
        return {rec.key for rec in self._records(ENDPOINTS) if rec.value is not None and rec.owner == self.name}

    def put_endpoint(self, ep: Endpoint) -> None:
        self.node.set(ENDPOINTS, ep.id, ep.record.to_record())

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.node.delete(ENDPOINTS, endpoint_id)

    # ---- address blocks --------------------------------------------------------------------

    def block_claims(self, network: str) -> list[BlockClaim]:
        members = {m.name: m for m in self.node.members()}
        claims = []
        for rec in self._records(IPAM):
            value = rec.value
            if value is None or value.get("network") != network or "block" not in value:
                continue
            member = members.get(rec.owner)
            live = member is not None and member.state in ("alive", "suspect")
            dead_since = None
            if not live:
                dead_since = member.last_change if member is not None else 0.0
            claims.append(BlockClaim(network, value["block"], rec.owner, float(value["claimed_at"]), live,
                                     dead_since))
        return claims

    def claim_block(self, network: str, block: str) -> None:
        self.node.set(IPAM, f"{network}|{block}|{self.name}",
                      {"network": network, "block": block, "host": self.name, "claimed_at": time.time()})

    def withdraw_claim(self, network: str, block: str, host: str) -> None:
        """Remove a (dead) host's claim, so that the block can be claimed anew."""
        self.node.delete(IPAM, f"{network}|{block}|{host}")

    def release_block(self, network: str, block: str) -> None:
        self.node.delete(IPAM, f"{network}|{block}|{self.name}")

    def reserved_addresses(self, network: str) -> set[str]:
        return {v["address"] for v in self.node.table(IPAM).values()
                if v.get("network") == network and "address" in v}

    def reserve_address(self, network: str, address: str) -> None:
        self.node.set(IPAM, f"{network}|addr|{address}|{self.name}",
                      {"network": network, "address": address, "host": self.name, "claimed_at": time.time()})

    def release_address(self, network: str, address: str) -> None:
        self.node.delete(IPAM, f"{network}|addr|{address}|{self.name}")

    def my_blocks(self, network: str) -> set[str]:
        return {c.block for c in self.block_claims(network) if c.host == self.name}
