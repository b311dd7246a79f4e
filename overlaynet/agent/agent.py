"""The agent: owns this host's networks and endpoints, and keeps the kernel equal to them.

Every mutation is: validate -> allocate -> program the kernel -> persist. A failure while
programming the kernel undoes what was programmed, so the state dir never names an object that
was not made. `reconcile()` is level-triggered and idempotent: it compares the desired state
with what exists and makes the difference, at start (adoption after a restart or crash) and
periodically (repairs anything changed behind our back).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from overlaynet import __version__, kernel, model
from overlaynet.agent.config import Config
from overlaynet.agent.state import StateStore
from overlaynet.errors import BadRequest, Conflict, NotFound, OverlayError
from overlaynet.ipam import AddressPool
from overlaynet.kernel import KernelError
from overlaynet.model import Endpoint, Network

log = logging.getLogger("overlaynet.agent")
T = TypeVar("T")


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = StateStore(config.state_dir)
        self.node_id = ""
        self.advertise = config.advertise or ""
        self.underlay_mtu = 1500
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.reservations: dict[str, set[str]] = {}  # network name -> reserved IPs (Docker IPAM)
        self.started_at = time.time()
        self.last_reconcile: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        # One thread for all netlink work: kernel verbs run in order, never concurrently.
        self._kernel_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.prepare()
        self._load_identity()
        if not self.advertise:
            self.advertise = await self._kernel(kernel.detect_advertise_address)
        elif not await self._kernel(kernel.is_local_address, self.advertise):
            raise BadRequest(
                f"advertise address {self.advertise} is not configured on this host; "
                "pass --advertise with one of this host's IPv4 addresses"
            )
        self.underlay_mtu = await self._kernel(kernel.underlay_mtu, self.advertise)
        self._load_state()
        await self.reconcile()

    async def close(self) -> None:
        """Stop without touching the kernel: attached containers keep their networking."""
        self._kernel_pool.shutdown(wait=True)

    def _load_identity(self) -> None:
        node = self.store.read("node.json")
        if node is None:
            node = {"id": uuid.uuid4().hex, "name": self.config.name, "created_at": time.time()}
            self.store.write(node, "node.json")
        elif node.get("name") != self.config.name:
            log.warning("event=rename old=%s new=%s", node.get("name"), self.config.name)
            node["name"] = self.config.name
            self.store.write(node, "node.json")
        self.node_id = node["id"]

    def _load_state(self) -> None:
        for _, data in self.store.items("networks"):
            net = Network.from_dict(data)
            self.networks[net.name] = net
        for _, data in self.store.items("endpoints"):
            ep = Endpoint.from_dict(data)
            if ep.network in self.networks:
                self.endpoints[ep.id] = ep
            else:
                log.warning("event=orphan-endpoint id=%s network=%s action=forget", ep.id, ep.network)
                self.store.delete("endpoints", f"{ep.id}.json")
        for name in self.networks:
            self.reservations[name] = {ip for ip, _ in self.store.items("addresses", name)}
        log.info("event=state-loaded networks=%d endpoints=%d", len(self.networks), len(self.endpoints))

    async def _kernel(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kernel_pool, fn, *args)

    # ---- networks --------------------------------------------------------------------------

    async def create_network(self, request: dict[str, Any]) -> Network:
        name = model.validate_name(request.get("name"))
        subnet = model.validate_subnet(request.get("subnet"))
        async with self._lock:
            if name in self.networks:
                raise Conflict(f"network {name!r} already exists; pick another name or remove it first")
            taken_vnis = {n.vni for n in self.networks.values()}
            if request.get("vni") is not None:
                vni = model.validate_vni(request["vni"])
                if vni in taken_vnis:
                    other = next(n.name for n in self.networks.values() if n.vni == vni)
                    raise Conflict(f"VNI {vni} is already used by network {other!r}; pick another or omit --vni")
            else:
                vni = model.auto_vni(name, taken_vnis)
            for other_net in self.networks.values():
                if other_net.ip_network.overlaps(subnet):
                    raise Conflict(
                        f"subnet {subnet} overlaps network {other_net.name!r} ({other_net.subnet}); pick another"
                    )
            default_mtu = self.underlay_mtu - model.VXLAN_OVERHEAD
            mtu = model.validate_mtu(request["mtu"]) if request.get("mtu") is not None else default_mtu
            if mtu > default_mtu:
                raise BadRequest(
                    f"MTU {mtu} is too large for this host's underlay MTU {self.underlay_mtu}: "
                    f"at most {default_mtu} (VXLAN adds {model.VXLAN_OVERHEAD} bytes)"
                )
            gateway = request.get("gateway")
            if gateway is not None:
                gateway = AddressPool(str(subnet)).check_requested(str(gateway), [])
            options = request.get("options") or {}
            if not isinstance(options, dict):
                raise BadRequest("options must be a JSON object of string keys")
            net = Network(
                name=name, vni=vni, subnet=str(subnet), mtu=mtu, gateway=gateway,
                options=options, created_at=time.time(), owner=self.config.name,
            )
            self.networks[name] = net
            self.reservations[name] = set()
            self.store.write(net.to_dict(), "networks", f"{name}.json")
            log.info("event=network-created name=%s vni=%d subnet=%s mtu=%d", name, vni, subnet, mtu)
            return net

    async def delete_network(self, name: str, force: bool = False) -> None:
        async with self._lock:
            net = self.get_network(name)
            attached = [ep for ep in self.endpoints.values() if ep.network == name]
            if attached and not force:
                raise Conflict(
                    f"network {name!r} has {len(attached)} attached endpoint(s); detach them first "
                    "or use --force"
                )
            for ep in attached:
                await self._unplug(net, ep)
            await self._kernel(kernel.remove_sandbox, self._sandbox(net))
            for ip in self.reservations.pop(name, set()):
                self.store.delete("addresses", name, f"{ip}.json")
            self.store.delete("networks", f"{name}.json")
            del self.networks[name]
            log.info("event=network-removed name=%s forced_endpoints=%d", name, len(attached))

    def get_network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"no network named {name!r}; see `overlayctl network ls`") from None

    def network_view(self, net: Network) -> dict[str, Any]:
        view = net.to_dict()
        view["endpoints"] = sum(1 for ep in self.endpoints.values() if ep.network == net.name)
        return view

    # ---- endpoints -------------------------------------------------------------------------

    def _used_ips(self, net: Network) -> set[str]:
        used = {ep.ip for ep in self.endpoints.values() if ep.network == net.name}
        return used | self.reservations.get(net.name, set())

    async def create_endpoint(self, request: dict[str, Any]) -> Endpoint:
        net_name = request.get("network")
        if not isinstance(net_name, str):
            raise BadRequest("missing network: say which network to attach to")
        ifname = model.validate_ifname(request.get("ifname") or "eth0")
        endpoint_id = request.get("id") or uuid.uuid4().hex
        if not isinstance(endpoint_id, str) or not endpoint_id.isalnum() or len(endpoint_id) < 12:
            raise BadRequest(f"invalid endpoint id {endpoint_id!r}: at least 12 letters or digits")
        target = request.get("netns")
        async with self._lock:
            net = self.get_network(net_name)
            if endpoint_id in self.endpoints:
                raise Conflict(f"endpoint {endpoint_id} already exists")
            netns_path: str | None = None
            if target is not None:
                try:
                    netns_path = await self._kernel(kernel.resolve_netns, str(target))
                except KernelError as e:
                    raise BadRequest(str(e)) from None
                identity = await self._kernel(kernel.netns_identity, netns_path)
                for ep in self.endpoints.values():
                    if ep.network == net.name and ep.netns and self._same_netns(ep.netns, identity):
                        raise Conflict(
                            f"namespace {target} is already attached to network {net.name!r} "
                            f"(endpoint {ep.id[:12]}, {ep.ip}); detach it first"
                        )
            requested_ip = request.get("ip")
            reserved = self.reservations.get(net.name, set())
            if requested_ip and requested_ip in reserved:
                # Docker IPAM: RequestAddress reserved it; the endpoint takes the reservation over.
                in_use = {ep.ip for ep in self.endpoints.values() if ep.network == net.name}
                ip = AddressPool(net.subnet, net.gateway).check_requested(requested_ip, in_use)
                taking_reservation = True
            else:
                ip = AddressPool(net.subnet, net.gateway).allocate(self._used_ips(net), requested_ip)
                taking_reservation = False
            mac = model.validate_mac(request["mac"]) if request.get("mac") else model.mac_for(endpoint_id)
            for ep in self.endpoints.values():
                if ep.network == net.name and ep.mac == mac:
                    raise Conflict(f"MAC {mac} is already used by endpoint {ep.id[:12]} in {net.name!r}")
            ep = Endpoint(
                id=endpoint_id, network=net.name, ip=ip, prefixlen=net.ip_network.prefixlen, mac=mac,
                ifname=ifname, netns=netns_path, mtu=net.mtu, host=self.config.name,
                vtep=self.advertise, created_at=time.time(),
            )
            await self._ensure_network_plumbing(net)
            try:
                await self._kernel(kernel.ensure_veth, self._sandbox(net), self._veth_spec(ep))
            except KernelError as e:
                await self._kernel(kernel.remove_veth, self._sandbox(net), ep.id)
                raise BadRequest(f"cannot attach: {e}") from None
            self.endpoints[ep.id] = ep
            self.store.write(ep.to_dict(), "endpoints", f"{ep.id}.json")
            if taking_reservation:
                reserved.discard(ip)
                self.store.delete("addresses", net.name, f"{ip}.json")
            log.info("event=attached endpoint=%s network=%s ip=%s mac=%s netns=%s",
                     ep.id[:12], net.name, ip, mac, netns_path)
            return ep

    async def delete_endpoint(self, endpoint_id: str) -> Endpoint:
        async with self._lock:
            ep = self.get_endpoint(endpoint_id)
            await self._unplug(self.networks[ep.network], ep)
            return ep

    async def delete_endpoint_by_netns(self, network: str, netns_spec: str) -> Endpoint:
        net = self.get_network(network)
        try:
            path = await self._kernel(kernel.resolve_netns, netns_spec)
            identity = await self._kernel(kernel.netns_identity, path)
        except KernelError as e:
            raise BadRequest(str(e)) from None
        for ep in list(self.endpoints.values()):
            if ep.network == net.name and ep.netns and self._same_netns(ep.netns, identity):
                return await self.delete_endpoint(ep.id)
        raise NotFound(f"namespace {netns_spec} is not attached to network {network!r}")

    def _same_netns(self, path: str, identity: tuple[int, int]) -> bool:
        try:
            return kernel.netns_identity(path) == identity
        except KernelError:
            return False

    async def _unplug(self, net: Network, ep: Endpoint) -> None:
        await self._kernel(kernel.remove_veth, self._sandbox(net), ep.id)
        self.store.delete("endpoints", f"{ep.id}.json")
        self.endpoints.pop(ep.id, None)
        log.info("event=detached endpoint=%s network=%s ip=%s", ep.id[:12], net.name, ep.ip)
        if not any(e.network == net.name for e in self.endpoints.values()):
            # The sandbox exists only while the network has endpoints on this host.
            await self._kernel(kernel.remove_sandbox, self._sandbox(net))

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            matches = [e for e in self.endpoints.values() if e.id.startswith(endpoint_id)] if endpoint_id else []
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f"no endpoint {endpoint_id!r} on this host; see `overlayctl endpoint ls`")
        return ep

    def endpoint_view(self, ep: Endpoint) -> dict[str, Any]:
        view = ep.to_dict()
        view["host_ifname"] = kernel.host_veth_name(ep.id)
        view["container_ifname"] = kernel.container_veth_name(ep.id)
        view["gateway"] = self.networks[ep.network].gateway if ep.network in self.networks else None
        return view

    # ---- address reservations (Docker IPAM) -----------------------------------------------

    async def reserve_address(self, network: str, ip: str | None) -> tuple[str, int]:
        async with self._lock:
            net = self.get_network(network)
            addr = AddressPool(net.subnet, net.gateway).allocate(self._used_ips(net), ip)
            self.reservations.setdefault(net.name, set()).add(addr)
            self.store.write({"ip": addr, "created_at": time.time()}, "addresses", net.name, f"{addr}.json")
            return addr, net.ip_network.prefixlen

    async def release_address(self, network: str, ip: str) -> None:
        async with self._lock:
            net = self.get_network(network)
            if ip in self.reservations.get(net.name, set()):
                self.reservations[net.name].discard(ip)
                self.store.delete("addresses", net.name, f"{ip}.json")

    # ---- kernel programming ----------------------------------------------------------------

    def _sandbox(self, net: Network) -> str:
        return kernel.sandbox_path(self.config.state_dir, net.vni)

    def _veth_spec(self, ep: Endpoint) -> kernel.VethSpec:
        return kernel.VethSpec(
            endpoint_id=ep.id, target_netns=ep.netns, ifname=ep.ifname, mac=ep.mac,
            address_cidr=ep.address_cidr, mtu=ep.mtu, gateway=None,
        )

    async def _ensure_network_plumbing(self, net: Network) -> None:
        sandbox = self._sandbox(net)
        await self._kernel(kernel.ensure_sandbox, sandbox)
        await self._kernel(kernel.ensure_bridge, sandbox, net.mtu)
        spec = kernel.VxlanSpec(vni=net.vni, local=self.advertise, port=self.config.vxlan_port, mtu=net.mtu)
        await self._kernel(kernel.ensure_vxlan, sandbox, spec)

    async def reconcile(self) -> dict[str, Any]:
        """Make the kernel match the desired state; forget endpoints whose container is gone."""
        async with self._lock:
            started = time.monotonic()
            summary: dict[str, Any] = {"repaired": 0, "forgotten": 0, "stale_removed": 0, "errors": []}
            wanted_sandboxes = set()
            for net in list(self.networks.values()):
                local = [ep for ep in self.endpoints.values() if ep.network == net.name]
                if not local:
                    continue
                sandbox = self._sandbox(net)
                wanted_sandboxes.add(sandbox)
                try:
                    await self._ensure_network_plumbing(net)
                    present = await self._kernel(kernel.list_endpoint_links, sandbox)
                    for ep in local:
                        if kernel.endpoint_prefix(ep.id) in present:
                            continue
                        if ep.netns is not None and not os.path.exists(ep.netns):
                            # The container's namespace is gone, and its veth with it.
                            self.store.delete("endpoints", f"{ep.id}.json")
                            del self.endpoints[ep.id]
                            summary["forgotten"] += 1
                            log.info("event=endpoint-gone endpoint=%s network=%s ip=%s", ep.id[:12], net.name, ep.ip)
                            continue
                        await self._kernel(kernel.ensure_veth, sandbox, self._veth_spec(ep))
                        summary["repaired"] += 1
                        log.info("event=endpoint-repaired endpoint=%s network=%s", ep.id[:12], net.name)
                    known = {kernel.endpoint_prefix(ep.id) for ep in self.endpoints.values() if ep.network == net.name}
                    for key in present - known:
                        await self._kernel(kernel.remove_veth, sandbox, key)
                        summary["stale_removed"] += 1
                        log.info("event=stale-veth-removed key=%s network=%s", key, net.name)
                except (KernelError, OSError) as e:
                    summary["errors"].append(f"{net.name}: {e}")
                    log.error("event=reconcile-failed network=%s error=%s", net.name, e)
            for sandbox in await self._kernel(kernel.list_sandboxes, self.config.state_dir):
                if sandbox not in wanted_sandboxes:
                    await self._kernel(kernel.remove_sandbox, sandbox)
                    summary["stale_removed"] += 1
                    log.info("event=stale-sandbox-removed path=%s", sandbox)
            summary["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            summary["at"] = time.time()
            self.last_reconcile = summary
            return summary

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "node_id": self.node_id,
            "version": __version__,
            "advertise": self.advertise,
            "vxlan_port": self.config.vxlan_port,
            "dataplane": self.config.dataplane,
            "underlay_mtu": self.underlay_mtu,
            "state_dir": self.config.state_dir,
            "networks": len(self.networks),
            "endpoints": len(self.endpoints),
            "uptime_s": round(time.time() - self.started_at, 1),
            "last_reconcile": self.last_reconcile,
        }


__all__ = ["Agent", "OverlayError"]
