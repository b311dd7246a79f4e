"""This host's endpoints and address reservations: attach, rename, detach, and the addresses
behind them.

Every mutation is: validate -> allocate -> program -> persist -> publish. A failure while
programming undoes what was programmed, so the state dir never names an object that was not made.
Endpoints whose state file is unreadable are rebuilt from the cluster and the kernel (recovery.py);
those that cannot be are kept as `unknown`, and their veths are never removed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
import uuid
from typing import Any

from overlaynet import ipam, kernel, model
from overlaynet.agent.blocks import BlockAllocator
from overlaynet.agent.cluster import in_network
from overlaynet.agent.host import Host
from overlaynet.agent.kernel_mode import KernelMode
from overlaynet.agent.programmer import Programmer
from overlaynet.agent.recovery import UnknownEndpoint, rebuild, unreadable_endpoint_ids
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.errors import BadRequest, Conflict, InsufficientStorage, NotFound
from overlaynet.ipam import AddressPool
from overlaynet.kernel import KernelError
from overlaynet.model import Endpoint, Network
from overlaynet.requests import EndpointCreate

log = logging.getLogger("overlaynet.agent")


def _plug(dataplane: KernelMode | UserspaceMode, net: Network, sandbox: str, guard: kernel.PortGuard,
          programmed: kernel.PortGuard | None, veth: kernel.VethSpec) -> None:
    """An attach's kernel work, in one hop to the kernel thread and with one netlink handle per
    namespace: the network's sandbox, bridge and device; the first-hop guard with the new port,
    before the port exists (the container speaks only as itself from frame one); the veth pair."""
    with kernel.batch():
        dataplane.ensure_network(net, sandbox)
        kernel.sync_port_guard(sandbox, guard, programmed)
        kernel.ensure_veth(sandbox, veth)


class Endpoints:
    def __init__(self, host: Host, programmer: Programmer) -> None:
        self.host = host
        self.programmer = programmer
        self.endpoints = programmer.endpoints  # this host's endpoints: id -> Endpoint
        # Endpoints whose state file was unreadable (recovery.py): id -> quarantined file until
        # rebuilt; those that could not be rebuilt stay in `unknown` and their veths are never removed.
        self._unreadable: dict[str, str] = {}
        self.unknown: dict[str, UnknownEndpoint] = {}
        self.reservations: dict[str, set[str]] = {}  # network -> reserved IPs (Docker IPAM)
        self.blocks: BlockAllocator = None  # type: ignore[assignment]  # set by Agent.start()

    def on_network(self, network: str) -> list[Endpoint]:
        """This host's endpoints of one network."""
        return [ep for ep in self.endpoints.values() if ep.network == network]

    def load(self, cached_networks: list[Network]) -> None:
        """Read this host's endpoints and reservations from the state dir."""
        for key, data in self.host.store.items("endpoints"):
            try:
                ep = Endpoint.from_dict(data)
            except (KeyError, TypeError, ValueError) as e:
                self.host.store.quarantine(f"missing or bad field {e}", "endpoints", f"{key}.json")
                continue
            self.endpoints[ep.id] = ep
        self._unreadable = unreadable_endpoint_ids(self.host.config.state_dir, self.endpoints)
        for net in cached_networks:
            self.reservations[net.name] = {ip for ip, _ in self.host.store.items("addresses", net.name)}

    def restore(self) -> None:
        """Re-publish our reservations, endpoints and their blocks; withdraw what we no longer have."""
        for network, addresses in self.reservations.items():
            for addr in addresses:
                self.host.cluster.reserve_address(network, addr)
        for ep in self.endpoints.values():
            self.host.cluster.put_endpoint(ep)
            block = ipam.block_of(self._subnet_for(ep), ep.ip)
            if block not in self.host.cluster.my_blocks(ep.network):
                self.host.cluster.claim_block(ep.network, block)
        for stale in self.host.cluster.my_endpoint_ids() - set(self.endpoints) - set(self._unreadable):
            self.host.cluster.delete_endpoint(stale)

    async def leave_network(self, net: Network) -> None:
        """A network removed cluster-wide: unplug our endpoints, drop our reservations in it."""
        for ep in self.on_network(net.name):
            await self.unplug(net, ep)
        await self.host.kernel(self.host.dataplane.remove_network, net, self.host.sandbox(net))
        for ip in self.reservations.pop(net.name, set()):
            self.host.forget_reservation(net.name, ip)

    async def rebuild_unreadable(self, cached_networks: list[Network]) -> None:
        """Rebuild endpoints whose state file was unreadable; keep and report the rest."""
        networks = {net.name: net for net in cached_networks}
        networks.update(self.host.networks)
        records = self.host.cluster.endpoints()
        for endpoint_id, file in sorted(self._unreadable.items()):
            record = records.get(endpoint_id)
            if record is not None and record.host != self.host.config.name:
                record = None
            result = await self.host.kernel(rebuild, endpoint_id, file, record, networks,
                                            self.host.config.state_dir, self.host.name, self.host.advertise)
            if isinstance(result, UnknownEndpoint):
                self.unknown[endpoint_id] = result
                log.error("event=endpoint-unknown endpoint=%s network=%s veth_kept=%s file=%s",
                          endpoint_id[:12], result.network or "-", "yes" if result.sandbox else "none-left", file)
                continue
            self.host.save_endpoint(result)
            os.unlink(file)
            del self._unreadable[endpoint_id]
            self.unknown.pop(endpoint_id, None)
            self.endpoints[endpoint_id] = result
            log.warning("event=endpoint-rebuilt endpoint=%s network=%s ip=%s source=%s netns=%s",
                        endpoint_id[:12], result.network, result.ip, "cluster+kernel" if record else "kernel",
                        result.netns or "-")

    def kept_prefixes(self) -> set[str]:
        """Veths of endpoints we cannot read but must not remove."""
        return {kernel.endpoint_prefix(eid) for eid in self._unreadable}

    def _subnet_for(self, ep: Endpoint) -> str:
        net = self.host.networks.get(ep.network)
        # Without the network's record, the subnet the endpoint's own address and prefix lie in.
        return net.subnet if net else str(ipaddress.ip_interface(f"{ep.ip}/{ep.prefixlen}").network)

    def _used_ips(self, net: Network) -> set[str]:
        used = {ep.ip for ep in in_network(self.host.cluster.endpoints().values(), net.name)}
        used |= {ep.ip for ep in self.on_network(net.name)}
        used |= self.host.cluster.reserved_addresses(net.name)
        return used | self.reservations.get(net.name, set())

    def release_empty_blocks(self, net: Network) -> None:
        mine = {ep.ip for ep in self.on_network(net.name)}
        self.blocks.release_unused(net, mine | self.reservations.get(net.name, set()))

    async def reserve_address(self, network: str, ip: str | None) -> tuple[str, int]:
        async with self.host.lock:
            net = self.host.get_network(network)
            addr = await self.blocks.allocate(net, lambda: self._used_ips(net), ip)
            try:
                self.host.save_reservation(net.name, addr)
            except InsufficientStorage:
                self.release_empty_blocks(net)
                raise
            self.reservations.setdefault(net.name, set()).add(addr)
            self.host.cluster.reserve_address(net.name, addr)
            return addr, net.ip_network.prefixlen

    async def release_address(self, network: str, ip: str) -> None:
        async with self.host.lock:
            net = self.host.get_network(network)
            if ip in self.reservations.get(net.name, set()):
                # Only a reservation this host holds: Docker releases after DeleteEndpoint, by which
                # time the address may be someone else's.
                self.reservations[net.name].discard(ip)
                self.host.forget_reservation(net.name, ip)
                self.host.cluster.release_address(net.name, ip)
                self.release_empty_blocks(net)

    # ---- endpoints -------------------------------------------------------------------------

    async def _refuse_unless_encrypting(self, net: Network) -> None:
        """An encrypted network's endpoint only on a host that encrypts (and gets keys safely)."""
        self.programmer.keys.refuse_without_encrypted_gossip(f"attach to encrypted network {net.name!r}")
        reason = await self.host.kernel(self.host.dataplane.encryption_unavailable)
        if reason:
            raise BadRequest(f"cannot attach to encrypted network {net.name!r}: this host {reason}")

    async def create_endpoint(self, request: EndpointCreate) -> Endpoint:
        net_name = request.network
        ifname = model.validate_ifname(request.ifname or "eth0")
        endpoint_id = request.id or uuid.uuid4().hex
        if not endpoint_id.isalnum() or len(endpoint_id) < 12:
            raise BadRequest(f"invalid endpoint id {endpoint_id!r}: at least 12 letters or digits")
        target = request.netns
        labels = model.validate_labels(request.labels)
        names = model.validate_dns_names(request.names)
        started = time.perf_counter()
        async with self.host.lock:
            net = self.host.get_network(net_name)
            if net.encrypted:
                await self._refuse_unless_encrypting(net)
            if endpoint_id in self.endpoints:
                raise Conflict(f"endpoint {endpoint_id} already exists")
            netns_path: str | None = None
            if target is not None:
                attached = {ep.id: ep.netns for ep in self.on_network(net.name) if ep.netns}
                try:
                    netns_path, same = await self.host.kernel(kernel.netns_attached, target, attached)
                except KernelError as e:
                    raise BadRequest(str(e)) from None
                for ep_id in same:
                    ep = self.endpoints[ep_id]
                    raise Conflict(
                        f"namespace {target} is already attached to network {net.name!r} "
                        f"(endpoint {ep.id[:12]}, {ep.ip}); detach it first"
                    )
            requested_ip = request.ip
            reserved = self.reservations.get(net.name, set())
            taking_reservation = requested_ip is not None and requested_ip in reserved
            if requested_ip is not None and taking_reservation:
                # Docker IPAM: RequestAddress reserved it; the endpoint takes the reservation over.
                ip = AddressPool(net.subnet, net.gateway).check_requested(
                    requested_ip, self._used_ips(net) - {requested_ip})
            else:
                ip = await self.blocks.allocate(net, lambda: self._used_ips(net), requested_ip)
            mac = model.validate_mac(request.mac) if request.mac else model.mac_for(endpoint_id)
            for other in in_network(self.host.cluster.endpoints().values(), net.name):
                if other.mac == mac:
                    raise Conflict(f"MAC {mac} is already used in network {net.name!r} (host {other.host})")
            ep = Endpoint(
                id=endpoint_id, network=net.name, ip=ip, prefixlen=net.ip_network.prefixlen, mac=mac,
                ifname=ifname, netns=netns_path, mtu=net.mtu, host=self.host.config.name,
                vtep=self.host.advertise, created_at=time.time(), labels=labels, names=names,
            )
            sandbox = self.host.sandbox(net)
            guard, programmed = self.programmer.guard_change(net, ep)
            try:
                await self.host.kernel(_plug, self.host.dataplane, net, sandbox, guard, programmed,
                                       self.programmer.veth_spec(ep))
                self.programmer.guard_written(net, guard)
            except KernelError as e:
                self.programmer.guard_written(net, None)
                await self.host.kernel(kernel.remove_veth, sandbox, ep.id)
                self.release_empty_blocks(net)
                raise BadRequest(f"cannot attach: {e}") from None
            try:
                # Persist before anyone hears of it: a container must never be live but unsaved.
                self.host.save_endpoint(ep)
            except InsufficientStorage:
                await self._undo_attach(net, ep)
                raise
            self.endpoints[ep.id] = ep
            self.host.cluster.put_endpoint(ep)
            if taking_reservation:
                reserved.discard(ip)
                self.host.forget_reservation(net.name, ip)
                self.host.cluster.release_address(net.name, ip)
            self.programmer.forwarding_changed(net.name)
            self.programmer.names_changed(net.name)
            log.info("event=attached endpoint=%s network=%s ip=%s mac=%s netns=%s names=%s took_ms=%.1f",
                     ep.id[:12], net.name, ip, mac, netns_path, ",".join(names) or "-",
                     (time.perf_counter() - started) * 1000)
        if requested_ip and not taking_reservation and self.host.cluster.others_alive():
            await self._settle_requested_ip(ep)
        self.host.dirty.set()
        return ep

    async def _undo_attach(self, net: Network, ep: Endpoint) -> None:
        """Take back the kernel side of an attach that could not be saved."""
        await self.host.kernel(kernel.remove_veth, self.host.sandbox(net), ep.id)
        if not self.on_network(net.name) and not any(
                u.network == net.name for u in self.unknown.values()):
            await self.host.kernel(self.host.dataplane.remove_network, net, self.host.sandbox(net))
            self.programmer.forwarding_changed(net.name)
        self.release_empty_blocks(net)
        log.error("event=attach-undone endpoint=%s network=%s reason=state-dir-full", ep.id[:12], net.name)

    async def _settle_requested_ip(self, ep: Endpoint) -> None:
        """A requested address may sit in another host's block: if that host handed it out at the
        same moment, its endpoint wins and ours is undone."""
        net = self.host.get_network(ep.network)
        holder = self.blocks.holder(net, ipam.block_of(net.subnet, ep.ip))
        if holder == self.host.config.name:
            return
        await asyncio.sleep(self.host.config.settle_time)
        for other in in_network(self.host.cluster.endpoints().values(), ep.network):
            if other.ip == ep.ip and other.id != ep.id:
                await self.delete_endpoint(ep.id)
                raise Conflict(f"IP {ep.ip} was handed out at the same moment on host {other.host!r}; "
                               "pick another or omit --ip")

    async def set_endpoint_names(self, endpoint_id: str, names: list[str]) -> Endpoint:
        """Change what may change on a live endpoint: its DNS names (replaced as a whole)."""
        names = model.validate_dns_names(names)
        async with self.host.lock:
            ep = self.get_endpoint(endpoint_id)
            self.host.save_endpoint(ep, names=names)
            ep.names = names
            self.host.cluster.put_endpoint(ep)
            self.programmer.names_changed(ep.network)
            log.info("event=endpoint-named endpoint=%s network=%s names=%s", ep.id[:12], ep.network,
                     ",".join(names) or "-")
            return ep

    async def delete_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """Detach an endpoint; for an `unknown` one, remove its veth and its unreadable file."""
        async with self.host.lock:
            unknown = [u for u in self.unknown.values() if endpoint_id and u.id.startswith(endpoint_id)]
            if endpoint_id not in self.endpoints and len(unknown) == 1:
                await self._forget_unknown(unknown[0])
                return None
            ep = self.get_endpoint(endpoint_id)
            net = self.host.networks.get(ep.network)
            await self.unplug(net, ep)
            return ep

    async def delete_endpoint_by_netns(self, network: str, netns_spec: str) -> Endpoint:
        net = self.host.get_network(network)
        attached = {ep.id: ep.netns for ep in self.on_network(net.name) if ep.netns}
        try:
            _, same = await self.host.kernel(kernel.netns_attached, netns_spec, attached)
        except KernelError as e:
            raise BadRequest(str(e)) from None
        for ep_id in same:
            ep = self.endpoints.get(ep_id)  # may have gone while the kernel call ran
            if ep is None:
                continue
            async with self.host.lock:
                await self.unplug(net, ep)
            return ep
        raise NotFound(f"namespace {netns_spec} is not attached to network {network!r}")

    async def _forget_unknown(self, unknown: UnknownEndpoint) -> None:
        if unknown.sandbox is not None:
            await self.host.kernel(kernel.remove_veth, unknown.sandbox, unknown.id)
        try:
            os.unlink(unknown.file)
        except FileNotFoundError:
            pass
        self._unreadable.pop(unknown.id, None)
        del self.unknown[unknown.id]
        self.host.cluster.delete_endpoint(unknown.id)
        log.info("event=unknown-endpoint-removed endpoint=%s network=%s", unknown.id[:12], unknown.network or "-")
        self.host.dirty.set()

    async def unplug(self, net: Network | None, ep: Endpoint) -> None:
        """Remove an endpoint everywhere; `net` is None when the network is already gone."""
        sandbox = self.host.sandbox(net) if net else None
        if sandbox is not None:
            await self.host.kernel(kernel.remove_veth, sandbox, ep.id)
        self.host.forget_endpoint(ep.id)
        self.endpoints.pop(ep.id, None)
        self.host.cluster.delete_endpoint(ep.id)
        self.programmer.names_changed(ep.network)
        log.info("event=detached endpoint=%s network=%s ip=%s", ep.id[:12], ep.network, ep.ip)
        if net is not None:
            self.release_empty_blocks(net)
            if not self.on_network(net.name):
                # The sandbox exists only while the network has endpoints on this host.
                await self.host.kernel(self.host.dataplane.remove_network, net, self.host.sandbox(net))
                self.programmer.network_removed(net.name)
        self.host.dirty.set()

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            matches = [e for e in self.endpoints.values() if e.id.startswith(endpoint_id)] if endpoint_id else []
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f"no endpoint {endpoint_id!r} on this host; see `overlayctl endpoint ls`")
        return ep

    async def endpoint_present(self, ep: Endpoint) -> bool:
        """Whether the endpoint's veth really exists in its network's sandbox."""
        net = self.host.networks.get(ep.network)
        if net is None:
            return False
        try:
            present = await self.host.kernel(kernel.list_endpoint_links, self.host.sandbox(net))
        except KernelError:
            return False
        return kernel.endpoint_prefix(ep.id) in present

    def endpoint_view(self, ep: Endpoint) -> dict[str, Any]:
        view = ep.to_dict()
        view["host_ifname"] = kernel.host_veth_name(ep.id)
        view["container_ifname"] = kernel.container_veth_name(ep.id)
        net = self.host.networks.get(ep.network)
        view["gateway"] = net.gateway if net else None
        view["egress"] = bool(net and net.egress)
        return view

