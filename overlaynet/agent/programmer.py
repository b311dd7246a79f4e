"""Desired state -> dataplane: what this host programs for every network with a local endpoint.

From the cluster's endpoint table (plus members declared dead less than `withdraw_delay` ago) and
this host's endpoints: the peers allowed to send to us, each network's first-hop guard and
forwarding entries (`forwarding_for`), egress, and the DNS servers on each gateway. What was last
pushed is remembered, so a pass changes only what changed (a forced pass rewrites everything).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from overlaynet import kernel
from overlaynet.agent.cluster import in_network
from overlaynet.agent.forwarding import Forwarding, forwarding_for
from overlaynet.agent.host import Host
from overlaynet.agent.netkeys import NetworkKeys, sas_for
from overlaynet.dns.answer import Zone
from overlaynet.dns.server import DnsService
from overlaynet.errors import BadRequest
from overlaynet.kernel import KernelError
from overlaynet.model import Endpoint, EndpointRecord, Network

log = logging.getLogger("overlaynet.agent")


class Programmer:
    def __init__(self, host: Host, endpoints: dict[str, Endpoint], keys: NetworkKeys) -> None:
        self.host = host
        self.keys = keys
        self.endpoints = endpoints  # this host's endpoints (owned by endpoints.py), read here
        self.counters = {"programmed_passes": 0, "entries_changed": 0, "program_errors": 0}
        self.program_failures: dict[str, str] = {}  # "peers" or a network -> its last programming error
        self._programmed: dict[str, tuple[Any, ...]] = {}  # network -> last forwarding pushed
        self._guarded: dict[str, kernel.PortGuard] = {}  # network -> first-hop guard last programmed
        self._peers: set[str] | None = None  # VTEPs last allowed to send to us
        self._sas: dict[str, list[dict[str, Any]]] = {}  # encrypted network -> the SAs last pushed
        self._egress: list[kernel.EgressSpec] | None = None  # egress last programmed
        # Until our view of the cluster is synced after a start, programming only adds entries:
        # removing what we merely have not heard about yet would cut traffic that should flow.
        self.synced = False
        self._failed_at: dict[str, float] = {}  # member -> when it was declared dead (monotonic)
        self.dns = DnsService(self._zone_for, host.kernel, rate_limit=host.config.dns_rate_limit)
        self._zones: dict[str, Zone] = {}  # network -> names, rebuilt after endpoint table changes

    # ---- what changed since the last pass --------------------------------------------------

    def member_failed(self, name: str) -> None:
        self._failed_at[name] = time.monotonic()

    def member_back(self, name: str) -> None:
        self._failed_at.pop(name, None)

    def names_changed(self, network: str | None = None) -> None:
        """Rebuild the DNS zone of `network` (of every network: None) when next asked."""
        if network is None:
            self._zones.clear()
        else:
            self._zones.pop(network, None)

    def forwarding_changed(self, network: str) -> None:
        """Push the forwarding of `network` again on the next pass, changed or not."""
        self._programmed.pop(network, None)

    def network_removed(self, network: str) -> None:
        self._programmed.pop(network, None)
        self._guarded.pop(network, None)
        self._sas.pop(network, None)

    def keys_due(self) -> bool:
        """An encrypted network's key plan moved on (a switch or overlap deadline passed, a new
        epoch arrived) since its SAs were last pushed: a program pass is due."""
        for name in {ep.network for ep in self.endpoints.values()}:
            net = self.host.networks.get(name)
            if net is not None and net.encrypted:
                plan = self.keys.key_plan(net)
                pushed = {(sa["dir"], sa["epoch"]) for sa in self._sas.get(name, [])}
                wanted = {("in", e) for e in plan.rx} | {("out", plan.tx)} if plan else set()
                if pushed != wanted:
                    return True
        return False

    def keys_view(self, name: str) -> dict[str, Any]:
        """The SAs this host programmed for a network, key material included (root only: the API
        checks the caller). For decrypting captures (scapy, Wireshark) while debugging."""
        net = self.host.get_network(name)
        if not net.encrypted:
            raise BadRequest(f"network {name!r} is not encrypted: it has no keys")
        sas = [{"peer": sa["peer"], "dir": sa["dir"], "epoch": sa["epoch"], "spi": f"{sa['spi']:#010x}",
                "key": sa["key"].hex(), "salt": sa["salt"].hex()} for sa in self._sas.get(net.name, [])]
        return {"network": net.name, "vni": net.vni, "vtep": self.host.advertise,
                "esp_port": self.host.config.esp_port, "sas": sas}

    # ---- desired state ---------------------------------------------------------------------

    def veth_spec(self, ep: Endpoint) -> kernel.VethSpec:
        # With egress, the container's default route goes via the anycast gateway into the sandbox
        # (kernel/egress.py); otherwise the gateway is only the DNS address, never a route.
        net = self.host.networks.get(ep.network)
        gateway = net.gateway if net is not None and net.egress and ep.netns is not None else None
        return kernel.VethSpec(
            endpoint_id=ep.id, target_netns=ep.netns, ifname=ep.ifname, mac=ep.mac,
            address_cidr=ep.address_cidr, mtu=ep.mtu, gateway=gateway,
        )

    def _lingering(self) -> set[str]:
        """Members declared dead less than `withdraw_delay` ago: their entries stay programmed."""
        now = time.monotonic()
        return {name for name, at in self._failed_at.items() if now - at < self.host.config.withdraw_delay}

    def _visible_endpoints(self) -> list[EndpointRecord]:
        endpoints = list(self.host.cluster.endpoints().values())
        lingering = self._lingering()
        if lingering:
            endpoints += self.host.cluster.endpoints_of(lingering)
        return endpoints

    def desired_forwarding(self, net: Network) -> Forwarding:
        fwd = forwarding_for(net.name, self.host.advertise, self._visible_endpoints())
        if net.gateway and net.gateway_mac:
            # The anycast gateway: ARP for it is answered on this host (kernel: the VXLAN device's
            # proxy; userspace: the fast path), never sent across the underlay.
            fwd.neigh[net.gateway] = net.gateway_mac
        return fwd

    def port_guard(self, net: Network, joining: Endpoint | None = None) -> kernel.PortGuard:
        """The first-hop rules of a network on this host: each local container speaks only as itself."""
        local = sorted((ep for ep in [*self.endpoints.values(), *([joining] if joining else [])]
                        if ep.network == net.name), key=lambda ep: ep.id)
        return kernel.PortGuard(
            overlay_ifname=self.host.dataplane.overlay_port(net),
            ports=tuple(kernel.GuardedPort(kernel.host_veth_name(ep.id), ep.mac, ep.ip) for ep in local),
            known_macs=frozenset(ep.mac for ep in in_network(self._visible_endpoints(), net.name) if ep.mac),
            gateway_ip=net.gateway, gateway_mac=net.gateway_mac,
            bum_rate=self.host.config.bum_rate, bum_burst=self.host.config.bum_burst,
        )

    def guard_change(self, net: Network, joining: Endpoint) -> tuple[kernel.PortGuard, kernel.PortGuard | None]:
        """For an attach that programs the guard itself: the guard with `joining`'s port, and the one
        last programmed (None: not known, write all of it)."""
        return self.port_guard(net, joining), self._guarded.get(net.name)

    def guard_written(self, net: Network, guard: kernel.PortGuard | None) -> None:
        """What the attach left in the kernel (None: not known after an error; the next pass writes it whole)."""
        if guard is None:
            self._guarded.pop(net.name, None)
        else:
            self._guarded[net.name] = guard

    async def sync_guard(self, net: Network, force: bool = False) -> None:
        """Program the guard when it changed, or (force) when its table is missing from the sandbox.

        Rewriting an unchanged guard would refill every port's BUM bucket: not on every resync.
        """
        guard = self.port_guard(net)
        sandbox = self.host.sandbox(net)
        programmed = self._guarded.get(net.name)
        if programmed == guard:
            if not force:
                return
            counters = await self.host.kernel(kernel.drop_counters, sandbox)
            if counters:  # the table is there
                return
            programmed = None  # it is not: write all of it
        await self.host.kernel(kernel.sync_port_guard, sandbox, guard, programmed)
        self._guarded[net.name] = guard

    def _zone_for(self, network: str) -> Zone | None:
        """The names the DNS server of `network` answers (cached until the endpoints change)."""
        zone = self._zones.get(network)
        if zone is None:
            net = self.host.networks.get(network)
            if net is None:
                return None
            zone = self._zones[network] = Zone.build(net.name, net.subnet, self._visible_endpoints())
        return zone

    async def _sync_dns(self) -> None:
        wanted = {}
        for name in {ep.network for ep in self.endpoints.values()}:
            net = self.host.networks.get(name)
            if net is not None and net.gateway:
                wanted[name] = (net.gateway, self.host.sandbox(net))
        await self.dns.sync(wanted)

    async def program(self, force: bool = False) -> int:
        """Push remote endpoints into the dataplane of every network with a local endpoint."""
        async with self.host.lock:
            if force:  # read the kernel again instead of trusting what was written: repairs drift
                await self.host.kernel(self.host.dataplane.forget_programmed)
            networks = self.host.networks
            changed = 0
            lingering = self._lingering()
            peers = {str(m.meta.get("vtep")) for m in self.host.cluster.members()
                     if m.name != self.host.config.name and m.meta.get("vtep")
                     and (m.state in ("alive", "suspect") or m.name in lingering)}
            if not self.synced and self._peers is not None:
                peers |= self._peers
            if force or peers != self._peers:
                try:
                    await self.host.kernel(self.host.dataplane.sync_peers, peers)
                    self._peers = peers
                    self.program_failures.pop("peers", None)
                except KernelError as e:
                    self.counters["program_errors"] += 1
                    self.program_failures["peers"] = str(e)
                    log.error("event=program-failed what=peers error=%s", e)
            local_networks = {ep.network for ep in self.endpoints.values()}
            for gone in [k for k in self.program_failures if k.startswith("network ")
                         and k.removeprefix("network ") not in local_networks]:
                del self.program_failures[gone]  # nothing to program there any more
            for name in sorted(local_networks):
                net = networks.get(name)
                if net is None:
                    continue
                # The SAs first (an encrypted network sends nothing without them), then the entries,
                # then the guard: a new remote endpoint is reachable once its entries are in, one
                # nftables transaction sooner; until the guard knows its MAC, frames to it count as
                # unknown unicast (limited, not dropped).
                sas_error = await self._sync_sas(net, peers, force) if net.encrypted else None
                changed += await self._sync_forwarding(net, force, keep_failure=sas_error is not None)
                try:
                    await self.sync_guard(net, force)
                except KernelError as e:
                    self.counters["program_errors"] += 1
                    self.program_failures[f"network {name}"] = f"first-hop guard: {e}"
                    log.error("event=program-failed what=port-guard network=%s error=%s", name, e)
            await self._sync_egress(networks, force)
            self._zones.clear()  # membership (and lingering) may have changed what is visible
            try:
                await self._sync_dns()
            except Exception:
                log.exception("event=dns-sync-failed")
            self.counters["programmed_passes"] += 1
            self.counters["entries_changed"] += changed
            return changed

    async def _sync_forwarding(self, net: Network, force: bool, keep_failure: bool) -> int:
        """Write the network's forwarding entries if they changed (force: always); how many changed.
        `keep_failure`: an error recorded for the network in this pass stays recorded."""
        fwd = self.desired_forwarding(net)
        if not self.synced:
            fwd = await self._keep_programmed(net, fwd)
        fingerprint = (tuple(sorted(fwd.fdb.items())), tuple(sorted(fwd.neigh.items())), tuple(sorted(fwd.flood)))
        if not force and self._programmed.get(net.name) == fingerprint:
            return 0
        try:
            n = await self.host.kernel(self.host.dataplane.program, net, self.host.sandbox(net), fwd)
        except KernelError as e:
            self.counters["program_errors"] += 1
            self.program_failures[f"network {net.name}"] = str(e)
            log.error("event=program-failed network=%s error=%s", net.name, e)
            return 0
        if not keep_failure:
            self.program_failures.pop(f"network {net.name}", None)
        self._programmed[net.name] = fingerprint
        if n or not force:
            log.info("event=programmed network=%s fdb=%d neigh=%d flood=%d changed=%d",
                     net.name, len(fwd.fdb), len(fwd.neigh), len(fwd.flood), n)
        return n

    async def _sync_sas(self, net: Network, peers: set[str], force: bool) -> str | None:
        """Push the network's SAs (all members' VTEPs: they are ready before a peer's first endpoint
        appears). With no secret yet there are none, and the fast path sends nothing (fail closed).
        Returns the error it recorded in program_failures, if any (it stays there until SAs go in)."""
        plan = self.keys.key_plan(net)
        sas = sas_for(plan, self.keys.secrets(net.name), net.vni, self.host.advertise, peers) if plan else []
        if not force and self._sas.get(net.name) == sas:
            return None
        try:
            await self.host.kernel(self.host.dataplane.sync_sas, net, sas)
            self._sas[net.name] = sas
            log.info("event=sas-programmed network=%s peers=%d tx_epoch=%s rx_epochs=%s", net.name, len(peers),
                     plan.tx if plan else "-", ",".join(map(str, plan.rx)) if plan else "-")
            if self.program_failures.get(f"network {net.name}", "").startswith("keys: "):
                del self.program_failures[f"network {net.name}"]  # the SAs are in now
            return None
        except KernelError as e:
            self.counters["program_errors"] += 1
            error = self.program_failures[f"network {net.name}"] = f"keys: {e}"
            log.error("event=program-failed what=sas network=%s error=%s", net.name, e)
            if "collides" in str(e) and self.keys.collision(net):
                log.warning("event=spi-collision network=%s action=rotate", net.name)
            return error

    def desired_egress(self, networks: dict[str, Network]) -> list[kernel.EgressSpec]:
        """Egress of every --egress network with an endpoint here, with this host's container addresses."""
        wanted = []
        for name in sorted({ep.network for ep in self.endpoints.values()}):
            net = networks.get(name)
            if net is None or not net.egress or not net.gateway:
                continue
            ips = frozenset(ep.ip for ep in self.endpoints.values() if ep.network == name and ep.netns is not None)
            wanted.append(kernel.EgressSpec(net.vni, net.subnet, self.host.sandbox(net), ips))
        return wanted

    async def _sync_egress(self, networks: dict[str, Network], force: bool) -> None:
        wanted = self.desired_egress(networks)
        if not force and wanted == self._egress:
            return
        try:
            await self.host.kernel(kernel.sync_egress, wanted)
            self._egress = wanted
            if wanted:
                log.info("event=egress-programmed networks=%s", ",".join(str(e.vni) for e in wanted))
        except KernelError as e:
            self.counters["program_errors"] += 1
            log.error("event=program-failed what=egress error=%s", e)

    async def _keep_programmed(self, net: Network, fwd: Forwarding) -> Forwarding:
        """Desired entries plus whatever is programmed now (the startup hold: add, never remove)."""
        try:
            now = await self.host.kernel(self.host.dataplane.programmed, net, self.host.sandbox(net))
        except KernelError:
            return fwd
        return Forwarding(
            fdb={**{e["mac"]: e["vtep"] for e in now["fdb"]}, **fwd.fdb},
            neigh={**{e["ip"]: e["mac"] for e in now["neigh"]}, **fwd.neigh},
            flood=set(now["flood"]) | fwd.flood,
        )


    async def programmed(self, name: str) -> dict[str, Any]:
        """What this host programmed for a network, and what it wants programmed."""
        net = self.host.get_network(name)
        actual = await self.host.kernel(self.host.dataplane.programmed, net, self.host.sandbox(net))
        fwd = self.desired_forwarding(net)
        local = any(ep.network == name for ep in self.endpoints.values())
        return {
            "network": name, "vni": net.vni, "local_endpoints": local,
            "programmed": actual,
            "desired": {"fdb": [{"mac": m, "vtep": v}
                                for m, v in sorted(self.host.dataplane.fdb_to_program(net, fwd).items())],
                        "flood": sorted(fwd.flood),
                        "neigh": [{"ip": i, "mac": m} for i, m in sorted(fwd.neigh.items())]}
            if local else {"fdb": [], "flood": [], "neigh": []},
        }

