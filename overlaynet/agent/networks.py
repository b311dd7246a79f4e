"""Networks: create, settle concurrent creations, remove, and mirror the cluster's networks in the
state dir (for a start with nobody else around).

The cluster-wide rules (docs/architecture.md): the same name created on two hosts at once keeps
one version; the same VNI or an overlapping subnet under another name goes to the earlier creation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from overlaynet import kernel, model
from overlaynet.agent.cluster import in_network
from overlaynet.agent.endpoints import Endpoints
from overlaynet.agent.host import Host
from overlaynet.agent.netkeys import NetworkKeys
from overlaynet.dataplane import esp_wire
from overlaynet.errors import BadRequest, Conflict
from overlaynet.ipam import AddressPool
from overlaynet.model import Network
from overlaynet.requests import NetworkCreate

log = logging.getLogger("overlaynet.agent")


class Networks:
    def __init__(self, host: Host, local: Endpoints, keys: NetworkKeys) -> None:
        self.host = host
        self.local = local
        self.keys = keys

    def load(self) -> list[Network]:
        """The networks cached in the state dir. A file that is JSON but not a network record is moved
        aside (kept as evidence); the cluster's copy of the record replaces it."""
        cached = []
        for key, data in self.host.store.items("networks"):
            try:
                cached.append(Network.from_dict(data))
            except ValueError as e:
                self.host.store.quarantine(str(e), "networks", f"{key}.json")
        return cached

    def restore(self, cached_networks: list[Network]) -> None:
        """Re-publish a cached network the cluster does not know, unless a tombstone says it was
        removed while we were away."""
        known = self.host.cluster.networks()
        for net in cached_networks:
            if net.name not in known and not self.host.cluster.network_deleted(net.name):
                self.host.cluster.put_network(net)
                log.info("event=network-republished name=%s vni=%d", net.name, net.vni)

    async def create_network(self, request: NetworkCreate) -> Network:
        name = model.validate_name(request.name)
        subnet = model.validate_subnet(request.subnet)
        if request.encrypted:
            self.keys.refuse_without_encrypted_gossip(f"create encrypted network {name!r}")
        vteps = [str(m.meta["vtep"]) for m in self.host.cluster.members() if m.meta.get("vtep")]
        model.check_clear_of_underlay(subnet, await self.host.kernel(kernel.underlay_networks, self.host.advertise),
                                      sorted({self.host.advertise, *vteps}))
        async with self.host.lock:
            networks = self.host.networks
            if name in networks:
                raise Conflict(f"network {name!r} already exists; pick another name or remove it first")
            taken_vnis = {n.vni for n in networks.values()}
            if request.vni is not None:
                vni = model.validate_vni(request.vni)
                if vni in taken_vnis:
                    other = next(n.name for n in networks.values() if n.vni == vni)
                    raise Conflict(f"VNI {vni} is already used by network {other!r}; pick another or omit --vni")
            else:
                vni = model.auto_vni(name, taken_vnis)
            for other_net in networks.values():
                if other_net.ip_network.overlaps(subnet):
                    raise Conflict(
                        f"subnet {subnet} overlaps network {other_net.name!r} ({other_net.subnet}); pick another"
                    )
            if request.encrypted:
                default_mtu = esp_wire.inner_mtu(self.host.underlay_mtu)
                overhead = f"VXLAN and ESP add {self.host.underlay_mtu - default_mtu}"
            else:
                default_mtu = self.host.underlay_mtu - model.VXLAN_OVERHEAD
                overhead = f"VXLAN adds {model.VXLAN_OVERHEAD}"
            mtu = model.validate_mtu(request.mtu) if request.mtu is not None else default_mtu
            if mtu > default_mtu:
                raise BadRequest(
                    f"MTU {mtu} is too large for this host's underlay MTU {self.host.underlay_mtu}: "
                    f"at most {default_mtu} ({overhead} bytes)"
                )
            gateway = request.gateway
            if gateway == "auto":
                # The first usable address: the network's anycast gateway and DNS address (dns.md).
                gateway = str(subnet.network_address + 1)
            if gateway is not None:
                gateway = AddressPool(str(subnet)).check_requested(gateway, [])
            options = request.options or {}
            if request.egress and gateway is None:
                raise BadRequest("egress needs the network's gateway (containers route through it): "
                                 "give a gateway or drop egress")
            net = Network(
                name=name, vni=vni, subnet=str(subnet), mtu=mtu, gateway=gateway,
                options=options, created_at=time.time(), owner=self.host.config.name, egress=request.egress,
                encrypted=request.encrypted,
            )
            if net.encrypted:
                # The secret first: a host that sees the network sees its key (or, for a moment,
                # nothing it could send with: the fast path drops what has no SA).
                self.keys.create(name)
            self.host.cluster.put_network(net)
            self.local.reservations.setdefault(name, set())
        if self.host.cluster.others_alive():
            await self._settle(net)
        log.info("event=network-created name=%s vni=%d subnet=%s mtu=%d encrypted=%s", name, vni, subnet, mtu,
                 net.encrypted)
        return net

    async def _settle(self, mine: Network) -> None:
        """Wait out concurrent creations elsewhere; if another host's network wins, say so.

        Same name: the replicated table keeps one version (last writer wins, host name breaks
        ties). Same VNI or overlapping subnet under another name: the earlier creation wins.
        """
        await asyncio.sleep(self.host.config.settle_time)
        current = self.host.networks.get(mine.name)
        if current is None:
            raise Conflict(f"network {mine.name!r} was removed by another host while it was being created")
        if current.owner != mine.owner or current.created_at != mine.created_at:
            raise Conflict(
                f"network {mine.name!r} was created at the same time on host {current.owner!r} "
                f"(vni {current.vni}, subnet {current.subnet}); that one was kept, yours discarded"
            )
        for other in self.host.networks.values():
            if other.name == mine.name:
                continue
            clash = other.vni == mine.vni or other.ip_network.overlaps(mine.ip_network)
            if clash and (other.created_at, other.name) < (mine.created_at, mine.name):
                self.host.cluster.delete_network(mine.name)
                what = f"VNI {mine.vni}" if other.vni == mine.vni else f"subnet {mine.subnet}"
                raise Conflict(
                    f"{what} was claimed at the same time by network {other.name!r} on host "
                    f"{other.owner!r}; {mine.name!r} was not created, try again"
                )

    async def delete_network(self, name: str, force: bool = False) -> None:
        async with self.host.lock:
            net = self.host.get_network(name)
            attached = in_network(self.host.cluster.endpoints().values(), name)
            if attached and not force:
                hosts = sorted({ep.host for ep in attached})
                raise Conflict(
                    f"network {name!r} has {len(attached)} attached endpoint(s) (on {', '.join(hosts)}); "
                    "detach them first or use --force"
                )
            self.host.cluster.delete_network(name)
            self.keys.forget(name)
            await self.local.leave_network(net)
            for block in self.host.cluster.my_blocks(name):
                self.host.cluster.release_block(name, block)
            self.host.forget_network(name)
            log.info("event=network-removed name=%s forced_endpoints=%d", name, len(attached))

    def network_view(self, net: Network) -> dict[str, Any]:
        view = {**net.to_dict(), "encrypted": net.encrypted}
        everywhere = in_network(self.host.cluster.endpoints().values(), net.name)
        view["endpoints"] = len(self.local.on_network(net.name))
        view["endpoints_cluster"] = len(everywhere)
        view["hosts"] = sorted({ep.host for ep in everywhere})
        view.update(self.keys.view(net))
        return view

    def cache_network(self, name: str) -> None:
        """Mirror the cluster's networks in the state dir, for a start with nobody else around."""
        net = self.host.cluster.networks().get(name)
        if net is None:
            self.host.forget_network(name)
        else:
            self.host.save_network(net)
