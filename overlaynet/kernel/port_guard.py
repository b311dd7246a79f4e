"""The first-hop guard: nftables `bridge` rules on the ports of a sandbox's bridge.

Both dataplanes plug containers into the sandbox bridge through a veth (host end `ove<id>`), so
one ruleset in the bridge's `prerouting` hook, which sees every frame as it enters the bridge
(before forwarding, flooding or local delivery to the gateway/DNS), covers kernel and userspace
mode alike. Per container port it enforces:

- the frame's source MAC is the port's own (`mac_spoof`);
- IPv4 comes from the port's own address, never 0.0.0.0: overlaynet assigns addresses statically,
  nobody here runs DHCP (`ip_spoof`);
- ARP names the port's own MAC and IP as sender; 0.0.0.0 is allowed as sender IP because RFC 5227
  address probes use it and a neighbour cache learns nothing from it (`arp_spoof`);
- only IPv4, ARP and IPv6 ethertypes pass: a VLAN tag could hide a spoofed inner frame (`ethertype`);
- broadcast, multicast and unknown unicast (any destination MAC that is not an endpoint of the
  network or the gateway) are limited to `bum_rate`/s with a burst of `bum_burst` (`bum_limit`).
A veth port the guard does not know (`ove*` with no rules yet) drops everything (`unknown_port`).

On the overlay port (the VXLAN device or the fast path's TAP) the same BUM limit applies per inner
source MAC (a dynamic set: one bucket per remote container), and a frame claiming the gateway's
MAC or IP or a local endpoint's MAC is dropped (`overlay_spoof`): defence in depth against a peer
that does not guard its own ports.

Every frame entering the bridge pays for a pass through this table, so the common case is the
cheapest: the overlay port is recognised by one name compare, a container port by one map lookup
(`goto`: nothing runs after its chain), and a container's IPv4 unicast to a known MAC is accepted
by the first rule of its chain (one set lookup); only the rest goes on to the rule per check.

A change is one transaction holding only the difference (a port's chain and `@ports` entry, set
elements: `changes`); a full refill (`ruleset`) flushes and rewrites chains, map and sets, deletes
stale port chains, but never deletes the table, its named counters or the per-source buckets. So
`overlayctl stats` loses no drop to reprogramming (a rebuilt table would reset its counters, and
copying the values over would lose the drops counted between the read and the commit: thousands
during a flood).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import KernelError
from .names import HOST_VETH_PREFIX
from .nftables import Command, list_table, run

FAMILY = "bridge"
TABLE = "overlaynet_ports"
DEFAULT_BUM_RATE = 1000
DEFAULT_BUM_BURST = 2000
DROP_REASONS = ("mac_spoof", "ip_spoof", "arp_spoof", "ethertype", "unknown_port", "bum_limit",
                "overlay_bum_limit", "overlay_spoof")
ALLOWED_ETHERTYPES = ["ip", "arp", "ip6"]
REMOTE_SOURCE_TIMEOUT = 60  # seconds a remote source MAC keeps its BUM bucket after its last broadcast


@dataclass(frozen=True)
class GuardedPort:
    ifname: str  # the veth's bridge end
    mac: str
    ip: str


@dataclass(frozen=True)
class PortGuard:
    overlay_ifname: str  # the VXLAN device (kernel mode) or TAP (userspace mode) on the bridge
    ports: tuple[GuardedPort, ...] = ()
    known_macs: frozenset[str] = field(default_factory=frozenset)  # every endpoint of the network
    gateway_ip: str | None = None
    gateway_mac: str | None = None
    bum_rate: int = DEFAULT_BUM_RATE
    bum_burst: int = DEFAULT_BUM_BURST


def _field(protocol: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def _match(left: dict[str, Any], right: Any, op: str = "==") -> Command:
    return {"match": {"op": op, "left": left, "right": right}}


def _set(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else {"set": sorted(values)}


def _drop(reason: str) -> list[Command]:
    return [{"counter": reason}, {"drop": None}]


def _over_limit(guard: PortGuard) -> Command:
    return {"limit": {"rate": guard.bum_rate, "burst": guard.bum_burst, "per": "second", "inv": True}}


def _rule(chain: str, *expr: Command) -> Command:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}}}


def _bum(guard: PortGuard) -> Command:
    """Destination is none of the network's unicast MACs: broadcast, multicast or unknown unicast."""
    return _match(_field("ether", "daddr"), "@known", "!=")


def _port_chain(guard: PortGuard, port: GuardedPort) -> list[Command]:
    chain = f"port_{port.ifname}"
    return [
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}},
        # The common case in one rule: IPv4 unicast to a known MAC, as itself. What it accepts passes
        # every rule below; everything else is judged by them.
        _rule(chain, _match(_field("ether", "saddr"), port.mac), _match(_field("ip", "saddr"), port.ip),
              _match(_field("ether", "daddr"), "@known"), {"accept": None}),
        _rule(chain, _match(_field("ether", "saddr"), port.mac, "!="), *_drop("mac_spoof")),
        _rule(chain, _match(_field("ether", "type"), _set(ALLOWED_ETHERTYPES), "!="), *_drop("ethertype")),
        _rule(chain, _match(_field("ip", "saddr"), port.ip, "!="), *_drop("ip_spoof")),
        _rule(chain, _match(_field("arp", "saddr ether"), port.mac, "!="), *_drop("arp_spoof")),
        _rule(chain, _match(_field("arp", "saddr ip"), _set([port.ip, "0.0.0.0"]), "!="), *_drop("arp_spoof")),
        _rule(chain, _bum(guard), _over_limit(guard), *_drop("bum_limit")),
        _rule(chain, {"accept": None}),
    ]


def _known(guard: PortGuard) -> set[str]:
    """Every unicast MAC of the network: its endpoints here and elsewhere, and the gateway."""
    return set(guard.known_macs) | _claimed(guard)


def _claimed(guard: PortGuard) -> set[str]:
    """MACs that live on this host: a frame from the overlay that claims one is spoofed."""
    return {p.mac for p in guard.ports} | ({guard.gateway_mac} if guard.gateway_mac else set())


def _elements(verb: str, name: str, elems: list[Any]) -> list[Command]:
    return [{verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}}] if elems else []


def _dispatch(port: GuardedPort) -> list[Any]:
    return [port.ifname, {"goto": {"target": f"port_{port.ifname}"}}]


def _overlay_chain(guard: PortGuard) -> list[Command]:
    chain = "overlay"
    commands: list[Command] = [{"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}}]
    commands.append(_rule(chain, _match(_field("ether", "saddr"), "@claimed"), *_drop("overlay_spoof")))
    if guard.gateway_ip:
        commands.append(_rule(chain, _match(_field("arp", "saddr ip"), guard.gateway_ip), *_drop("overlay_spoof")))
    per_source = {"set": {"op": "update", "elem": _field("ether", "saddr"), "set": "@remote_sources",
                          "stmt": [_over_limit(guard)]}}
    commands.append(_rule(chain, _bum(guard), per_source, *_drop("overlay_bum_limit")))
    return commands


def ruleset(guard: PortGuard, existing_chains: frozenset[str] = frozenset(), fresh: bool = True) -> list[Command]:
    """One transaction that makes the table hold `guard`, given the chains it holds now (and
    whether it exists at all: `fresh` when it does not).

    "add" of an existing table, counter, set or chain changes nothing (counters keep their counts);
    everything that depends on `guard` is flushed and written again.
    """
    table = {"family": FAMILY, "table": TABLE}
    body: list[Command] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    body += [{"add": {"counter": {**table, "name": reason}}} for reason in DROP_REASONS]
    if fresh:
        # Once made, the kernel reports the set as "dynamic" too, and libnftables 1.0.6's JSON has no
        # such flag: adding it again would differ and fail; it never changes, so it is made once.
        body.append({"add": {"set": {**table, "name": "remote_sources", "type": "ether_addr", "size": 65535,
                                     "flags": ["timeout"], "timeout": REMOTE_SOURCE_TIMEOUT}}})
    body.append({"add": {"chain": {**table, "name": "prerouting", "type": "filter",
                                   "hook": "prerouting", "prio": -200, "policy": "accept"}}})
    for chain in ["prerouting", *sorted(existing_chains - {"prerouting"})]:
        body.append({"flush": {"chain": {**table, "name": chain}}})  # first: no rule refers to a set or chain
    body.append({"add": {"map": {**table, "name": "ports", "type": "ifname", "map": "verdict"}}})
    body.append({"flush": {"map": {**table, "name": "ports"}}})
    for name, elems in (("known", _known(guard)), ("claimed", _claimed(guard))):
        body.append({"add": {"set": {**table, "name": name, "type": "ether_addr"}}})
        body.append({"flush": {"set": {**table, "name": name}}})
        body += _elements("add", name, sorted(elems))
    wanted = {f"port_{p.ifname}" for p in guard.ports} | {"overlay"}
    body += [{"delete": {"chain": {**table, "name": chain}}} for chain in sorted(existing_chains - wanted)
             if chain != "prerouting"]
    for port in guard.ports:
        body += _port_chain(guard, port)
    body += _overlay_chain(guard)
    body += _elements("add", "ports", [_dispatch(p) for p in guard.ports])
    # The overlay port by name (a compare is cheaper than the map's hash lookup), then the
    # container ports through the map; goto: a chain's end is the verdict, nothing after it runs.
    body.append(_rule("prerouting", _match({"meta": {"key": "iifname"}}, guard.overlay_ifname),
                      {"goto": {"target": "overlay"}}))
    body.append(_rule("prerouting", {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ports"}}))
    # A container port with no rules yet (or any more) says nothing.
    body.append(_rule("prerouting", _match({"meta": {"key": "iifname"}}, f"{HOST_VETH_PREFIX}*"),
                      *_drop("unknown_port")))
    return body


def changes(old: PortGuard, new: PortGuard) -> list[Command] | None:
    """The transaction that turns the programmed `old` into `new` touching only what differs (a port's
    chain and map entry, set elements), so attaching one container costs the same with one or two
    hundred on the host, and no other port's bucket refills. None when only a full refill will do."""
    if (old.overlay_ifname, old.gateway_ip, old.gateway_mac, old.bum_rate, old.bum_burst) != \
            (new.overlay_ifname, new.gateway_ip, new.gateway_mac, new.bum_rate, new.bum_burst):
        return None
    table = {"family": FAMILY, "table": TABLE}
    before, after = {p.ifname: p for p in old.ports}, {p.ifname: p for p in new.ports}
    gone = [before[name] for name in sorted(set(before) - set(after))]
    came = [after[name] for name in sorted(set(after) - set(before))]
    changed = [after[name] for name in sorted(set(after) & set(before)) if after[name] != before[name]]
    body: list[Command] = _elements("delete", "ports", [_dispatch(p) for p in gone])
    for port in gone:
        body.append({"flush": {"chain": {**table, "name": f"port_{port.ifname}"}}})
        body.append({"delete": {"chain": {**table, "name": f"port_{port.ifname}"}}})
    for port in changed:
        body.append({"flush": {"chain": {**table, "name": f"port_{port.ifname}"}}})
        body += _port_chain(new, port)[1:]
    for name, was, now in (("known", _known(old), _known(new)), ("claimed", _claimed(old), _claimed(new))):
        body += _elements("delete", name, sorted(was - now))
        body += _elements("add", name, sorted(now - was))
    for port in came:
        body += _port_chain(new, port)
    body += _elements("add", "ports", [_dispatch(p) for p in came])
    return body


def drop_counters(sandbox: str) -> dict[str, dict[str, int]]:
    """reason -> {"packets", "bytes"} of the guard in `sandbox`; {} if it has no guard."""
    out: dict[str, dict[str, int]] = {}
    for obj in list_table(sandbox, FAMILY, TABLE):
        counter = obj.get("counter")
        if isinstance(counter, dict) and counter.get("name") in DROP_REASONS:
            out[counter["name"]] = {"packets": int(counter.get("packets", 0)), "bytes": int(counter.get("bytes", 0))}
    return out


def sync_port_guard(sandbox: str, guard: PortGuard, programmed: PortGuard | None = None) -> None:
    """Make the sandbox's guard table exactly `guard`, in one transaction, keeping the counts.

    With `programmed` (what the caller last made it), only the difference is applied; if the
    kernel disagrees (the table vanished, or someone changed it) the whole table is refilled.
    """
    delta = changes(programmed, guard) if programmed is not None else None
    if delta is not None:
        try:
            if delta:
                run(sandbox, delta)
            return
        except KernelError:
            pass
    now = list_table(sandbox, FAMILY, TABLE)
    chains = frozenset(obj["chain"]["name"] for obj in now if "chain" in obj)
    run(sandbox, ruleset(guard, chains, fresh=not now))
