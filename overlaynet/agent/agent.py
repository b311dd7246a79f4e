"""The agent: this host's endpoints, its view of the cluster, and the kernel kept equal to both.

Desired state = networks and endpoints of the whole cluster (gossip tables) + this host's own
endpoints (state dir). Every mutation is: validate -> allocate -> program -> persist -> publish.
A failure while programming undoes what was programmed, so the state dir never names an object
that was not made. `reconcile()` is level-triggered and idempotent: at start (adoption after a
restart or crash), after gossip events (coalesced), and periodically (repairs drift).
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

from overlaynet import __version__, ipam, kernel, model
from overlaynet.agent import doctor
from overlaynet.agent.blocks import BlockAllocator
from overlaynet.agent.cluster import ENDPOINTS, IPAM, NETWORKS, Cluster
from overlaynet.agent.config import Config, parse_seed
from overlaynet.agent.dns import DnsService
from overlaynet.agent.forwarding import Forwarding, forwarding_for
from overlaynet.agent.health import Facts, Health, RecentIncrease, assess
from overlaynet.agent.kernel_mode import KernelMode
from overlaynet.agent.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS, Snapshot
from overlaynet.agent.recovery import UnknownEndpoint, rebuild, unreadable_endpoint_ids
from overlaynet.agent.state import StateStore
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.dns_answer import Zone
from overlaynet.errors import BadRequest, Conflict, InsufficientStorage, NotFound
from overlaynet.gossip.keyring import Keyring, KeyringError, decode_key, key_id
from overlaynet.gossip.state import KeyringChange, MemberChange, TableChange
from overlaynet.gossip.transport import GossipNode
from overlaynet.ipam import AddressPool
from overlaynet.kernel import KernelError
from overlaynet.model import Endpoint, Network
from overlaynet.requests import EndpointCreate, NetworkCreate

log = logging.getLogger("overlaynet.agent")
T = TypeVar("T")


class Agent:
    def __init__(self, config: Config, keyring: Keyring | None, reset_identity: bool = False) -> None:
        self.config = config
        self.reset_identity = reset_identity  # --reset-identity: a new node id if node.json is unreadable
        self.keyring = keyring
        self.store = StateStore(config.state_dir)
        self.node_id = ""
        self.advertise = config.advertise or ""
        self.underlay_mtu = 1500
        self.mode: KernelMode | UserspaceMode | None = None
        self.node: GossipNode | None = None
        self.cluster: Cluster = None  # type: ignore[assignment]  # set in start()
        self.endpoints: dict[str, Endpoint] = {}  # this host's endpoints
        # Endpoints whose state file was unreadable (recovery.py): id -> quarantined file until
        # rebuilt; those that could not be rebuilt stay in `unknown` and their veths are never removed.
        self._unreadable: dict[str, str] = {}
        self.unknown: dict[str, UnknownEndpoint] = {}
        self.reservations: dict[str, set[str]] = {}  # network -> reserved IPs (Docker IPAM)
        self.started_at = time.time()
        self.last_reconcile: dict[str, Any] = {}
        self.counters = {"programmed_passes": 0, "entries_changed": 0, "program_errors": 0}
        self.program_failures: dict[str, str] = {}  # "peers" or a network -> its last programming error
        self._auth_failures = RecentIncrease()
        self._programmed: dict[str, tuple[Any, ...]] = {}  # network -> last forwarding pushed
        self._guarded: dict[str, kernel.PortGuard] = {}  # network -> first-hop guard last programmed
        self._peers: set[str] | None = None  # VTEPs last allowed to send to us
        self._egress: list[kernel.EgressSpec] | None = None  # egress last programmed
        # Until our view of the cluster is synced after a start, programming only adds entries:
        # removing what we merely have not heard about yet would cut traffic that should flow.
        self._synced = False
        self._failed_at: dict[str, float] = {}  # member -> when it was declared dead (monotonic)
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._resync_wakeup = asyncio.Event()  # the resync interval changed (config reload)
        self._tasks: list[asyncio.Task[None]] = []
        # One thread for all netlink work: kernel verbs run in order, never concurrently.
        self._kernel_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self.dns = DnsService(self._zone_for, self._kernel, rate_limit=config.dns_rate_limit)
        self._zones: dict[str, Zone] = {}  # network -> names, rebuilt after endpoint table changes

    # ---- lifecycle -------------------------------------------------------------------------

    def _save_keyring(self) -> None:
        """The key file's one writer (a key generated on first start, then every KeyringChange)."""
        if self.keyring is not None and self.keyring.path is not None:
            self.keyring.save()

    async def start(self) -> None:
        self.store.prepare()
        if self.keyring is not None and self.keyring.path is not None and not self.keyring.path.exists():
            self._save_keyring()
        self._load_identity()
        if not self.advertise:
            self.advertise = await self._kernel(kernel.detect_advertise_address)
        elif not await self._kernel(kernel.is_local_address, self.advertise):
            raise BadRequest(
                f"advertise address {self.advertise} is not configured on this host; "
                "pass --advertise with one of this host's IPv4 addresses"
            )
        self.underlay_mtu = await self._kernel(kernel.underlay_mtu, self.advertise)
        home = await self._kernel(kernel.pin_sandboxes_outside_private_mounts)
        if home is not None:
            # e.g. started by `ip netns exec`: our mounts would die with us, and every sandbox with them
            log.warning("event=private-mount-namespace action=pin-sandbox-mounts mount_ns=\"%s\"", home)
        self.mode = self._make_mode()
        await self._kernel(self.dataplane.start)
        cached_networks = self._load_state()

        self.node = GossipNode(
            name=self.config.name, advertise=self.advertise, bind=self.config.bind, port=self.config.gossip_port,
            keyring=self.keyring, meta={"vtep": self.advertise, "node_id": self.node_id,
                                        "dataplane": self.config.dataplane},
        )
        self.cluster = Cluster(self.node, self.config.name)
        self.blocks = BlockAllocator(self.cluster, self.config.name, self.config.settle_time,
                                     self.config.ipam_reclaim_after)
        self.node.subscribe(self._on_gossip_event)
        await self.node.start()
        seeds = [parse_seed(s, self.config.gossip_port) for s in self.config.join]
        # Members we knew before a restart count as seeds too: a host that was itself the seed
        # finds its cluster again without being told.
        seeds += [peer for peer in self._remembered_peers() if peer not in seeds]
        if seeds:
            contacted = await self.node.join(seeds)
            if contacted:
                self._synced = True
            else:
                log.warning("event=join-failed seeds=%s action=retrying-in-background",
                            ",".join(f"{a}:{p}" for a, p in seeds))
                self._tasks.append(asyncio.create_task(self._join_until_contact(seeds)))
                self._tasks.append(asyncio.create_task(self._end_startup_hold()))
        else:
            self._synced = True  # a new cluster of one: nothing to wait for
        await self._rebuild_unreadable(cached_networks)
        self._restore(cached_networks)
        await self.reconcile()
        self._tasks.append(asyncio.create_task(self._program_on_change()))
        self._tasks.append(asyncio.create_task(self._resync_forever()))
        self._tasks.append(asyncio.create_task(self._watch_auth_failures()))

    def _make_mode(self) -> KernelMode | UserspaceMode:
        if self.config.dataplane == "userspace":
            return UserspaceMode(self.config.state_dir, self.advertise, self.config.vxlan_port,
                                 spin_us=self.config.fastpath_spin_us, log_format=self.config.log_format,
                                 peer_bum_rate=self.config.peer_bum_rate)
        return KernelMode(self.advertise, self.config.vxlan_port, peer_bum_rate=self.config.peer_bum_rate)

    @property
    def dataplane(self) -> KernelMode | UserspaceMode:
        assert self.mode is not None, "start() sets the dataplane mode"
        return self.mode

    async def close(self) -> None:
        """Stop without touching the kernel: attached containers keep their networking.

        Gossip stops without a leave message: to the others this host is failed, not gone for
        good, so its entries come back untouched when it returns (a restart is not a departure).
        """
        for task in self._tasks:
            task.cancel()
        self.dns.close()
        if self.node is not None:
            await self.node.stop()
        self._kernel_pool.shutdown(wait=True)

    async def _join_until_contact(self, seeds: list[tuple[str, int]]) -> None:
        assert self.node is not None
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            if await self.node.join(seeds):
                log.info("event=joined seeds=%s", ",".join(f"{a}:{p}" for a, p in seeds))
                self._synced = True
                await self._rebuild_unreadable([])
                self._restore([])
                self._dirty.set()
                return
            delay = min(delay * 2, 30.0)

    async def _end_startup_hold(self) -> None:
        """Nobody answered at start: after a grace period, trust our own (lonely) view."""
        await asyncio.sleep(self.config.startup_hold)
        if not self._synced:
            log.warning("event=startup-hold-ended msg=\"no member answered; programming from the local view\"")
            self._synced = True
            self._dirty.set()

    def _remembered_peers(self) -> list[tuple[str, int]]:
        data = self.store.read("members.json") or []
        return [(m["addr"], int(m["port"])) for m in data
                if isinstance(m, dict) and m.get("name") != self.config.name and "addr" in m and "port" in m]

    def _remember_peers(self) -> None:
        peers = [{"name": m.name, "addr": m.addr, "port": m.port} for m in self.cluster.live_members()
                 if m.name != self.config.name]
        if peers or self._remembered_peers():
            self.store.write(sorted(peers, key=lambda p: p["name"]), "members.json")

    def _load_identity(self) -> None:
        node = self.store.read("node.json")
        if node is not None and not (isinstance(node, dict) and isinstance(node.get("id"), str) and node["id"]):
            self.store.quarantine("no node id in it", "node.json")
            node = None
        corrupt = os.path.join(self.config.state_dir, "node.json.corrupt")
        if node is None and os.path.exists(corrupt):
            # A new id would make this host a stranger to its cluster: its endpoints and address
            # blocks belong to the old one. Only the operator may decide to start over.
            if not self.reset_identity:
                raise BadRequest(f"node identity {corrupt} is unreadable; restore it as node.json, or start "
                                 "with --reset-identity to give this host a new node id (name kept)")
            log.warning("event=identity-reset name=%s old_file=%s", self.config.name, corrupt)
            os.unlink(corrupt)
        if node is None:
            node = {"id": uuid.uuid4().hex, "name": self.config.name, "created_at": time.time()}
            self.store.write(node, "node.json")
        elif node.get("name") != self.config.name:
            log.warning("event=rename old=%s new=%s", node.get("name"), self.config.name)
            node["name"] = self.config.name
            self.store.write(node, "node.json")
        self.node_id = node["id"]

    def _load_state(self) -> list[Network]:
        cached = [Network.from_dict(data) for _, data in self.store.items("networks")]
        for key, data in self.store.items("endpoints"):
            try:
                ep = Endpoint.from_dict(data)
            except (KeyError, TypeError, ValueError) as e:
                self.store.quarantine(f"missing or bad field {e}", "endpoints", f"{key}.json")
                continue
            self.endpoints[ep.id] = ep
        self._unreadable = unreadable_endpoint_ids(self.config.state_dir, self.endpoints)
        for net in cached:
            self.reservations[net.name] = {ip for ip, _ in self.store.items("addresses", net.name)}
        log.info("event=state-loaded networks=%d endpoints=%d", len(cached), len(self.endpoints))
        return cached

    def _restore(self, cached_networks: list[Network]) -> None:
        """Put this host's part of the cluster state back after a start or a (re)join.

        A cached network the cluster does not know is re-published, unless a tombstone says it was
        removed while we were away; our endpoints are re-published; entries the cluster still holds
        in our name but we no longer have are withdrawn.
        """
        known = self.cluster.networks()
        for net in cached_networks:
            if net.name not in known and not self.cluster.network_deleted(net.name):
                self.cluster.put_network(net)
                log.info("event=network-republished name=%s vni=%d", net.name, net.vni)
        for network, addresses in self.reservations.items():
            for addr in addresses:
                self.cluster.reserve_address(network, addr)
        for ep in self.endpoints.values():
            self.cluster.put_endpoint(ep)
            block = ipam.block_of(self._subnet_for(ep), ep.ip)
            if block not in self.cluster.my_blocks(ep.network):
                self.cluster.claim_block(ep.network, block)
        for stale in self.cluster.my_endpoint_ids() - set(self.endpoints) - set(self._unreadable):
            self.cluster.delete_endpoint(stale)

    async def _rebuild_unreadable(self, cached_networks: list[Network]) -> None:
        """Rebuild endpoints whose state file was unreadable; keep and report the rest."""
        networks = {net.name: net for net in cached_networks}
        networks.update(self.networks)
        records = self.cluster.endpoints()
        for endpoint_id, file in sorted(self._unreadable.items()):
            record = records.get(endpoint_id)
            if record is not None and record.get("host") != self.config.name:
                record = None
            result = await self._kernel(rebuild, endpoint_id, file, record, networks, self.config.state_dir,
                                        self.config.name, self.advertise)
            if isinstance(result, UnknownEndpoint):
                self.unknown[endpoint_id] = result
                log.error("event=endpoint-unknown endpoint=%s network=%s veth_kept=%s file=%s",
                          endpoint_id[:12], result.network or "-", "yes" if result.sandbox else "none-left", file)
                continue
            self.store.write(result.to_dict(), "endpoints", f"{endpoint_id}.json")
            os.unlink(file)
            del self._unreadable[endpoint_id]
            self.unknown.pop(endpoint_id, None)
            self.endpoints[endpoint_id] = result
            log.warning("event=endpoint-rebuilt endpoint=%s network=%s ip=%s source=%s netns=%s",
                        endpoint_id[:12], result.network, result.ip, "cluster+kernel" if record else "kernel",
                        result.netns or "-")

    def _kept_prefixes(self) -> set[str]:
        """Veths of endpoints we cannot read but must not remove."""
        return {kernel.endpoint_prefix(eid) for eid in self._unreadable}

    def _subnet_for(self, ep: Endpoint) -> str:
        net = self.networks.get(ep.network)
        return net.subnet if net else f"{ep.ip}/{ep.prefixlen}"

    async def _kernel(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kernel_pool, fn, *args)

    # ---- gossip events ---------------------------------------------------------------------

    def _on_gossip_event(self, event: object) -> None:
        try:
            self._handle_gossip_event(event)
        except (OSError, InsufficientStorage) as e:
            # Only caches in the state dir are behind (the cluster holds the truth): never let a
            # full disk break gossip's delivery of events.
            log.error("event=state-save-failed during=gossip-event error=\"%s\"", e)

    def _handle_gossip_event(self, event: object) -> None:
        if isinstance(event, TableChange):
            if event.table == NETWORKS:
                self._cache_network(event.key)
            if event.table in (NETWORKS, ENDPOINTS):
                self._zones.clear()
                self._dirty.set()
        elif isinstance(event, KeyringChange):
            self._save_keyring()  # every change, ours or gossiped
            log.info("event=key-%s key_id=%s", event.op, event.key_id)
        elif isinstance(event, MemberChange):
            log.info("event=member-%s name=%s addr=%s", event.new or "reaped", event.name, event.member.addr)
            if event.new == "dead":
                # Keep its entries programmed a little longer: a restarting overlayd looks dead for a
                # moment, while its containers' traffic never stopped flowing.
                self._failed_at[event.name] = time.monotonic()
                asyncio.get_running_loop().call_later(self.config.withdraw_delay + 0.05, self._dirty.set)
            else:
                self._failed_at.pop(event.name, None)
            if event.new == "alive" or event.new is None or event.new == "left":
                self._remember_peers()
            self._dirty.set()

    def _cache_network(self, name: str) -> None:
        """Mirror the cluster's networks in the state dir, for a start with nobody else around."""
        net = self.cluster.networks().get(name)
        if net is None:
            self.store.delete("networks", f"{name}.json")
        else:
            self.store.write(net.to_dict(), "networks", f"{name}.json")

    async def _program_on_change(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.002)  # coalesce a burst of table changes into one pass
            self._dirty.clear()
            try:
                await self.program()
            except Exception:
                self.counters["program_errors"] += 1
                log.exception("event=program-failed")

    def resync_interval_changed(self) -> None:
        """Start the next wait with the new interval instead of finishing the old one."""
        self._resync_wakeup.set()

    async def _resync_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._resync_wakeup.wait(), self.config.resync_interval)
                self._resync_wakeup.clear()
                continue
            except TimeoutError:
                pass
            try:
                await self.reconcile()
            except Exception:
                log.exception("event=resync-failed")

    # ---- networks --------------------------------------------------------------------------

    @property
    def networks(self) -> dict[str, Network]:
        return self.cluster.networks()

    async def create_network(self, request: NetworkCreate) -> Network:
        name = model.validate_name(request.name)
        subnet = model.validate_subnet(request.subnet)
        vteps = [str(m.meta["vtep"]) for m in self.cluster.members() if m.meta.get("vtep")]
        model.check_clear_of_underlay(subnet, await self._kernel(kernel.underlay_networks, self.advertise),
                                      sorted({self.advertise, *vteps}))
        async with self._lock:
            networks = self.networks
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
            default_mtu = self.underlay_mtu - model.VXLAN_OVERHEAD
            mtu = model.validate_mtu(request.mtu) if request.mtu is not None else default_mtu
            if mtu > default_mtu:
                raise BadRequest(
                    f"MTU {mtu} is too large for this host's underlay MTU {self.underlay_mtu}: "
                    f"at most {default_mtu} (VXLAN adds {model.VXLAN_OVERHEAD} bytes)"
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
                options=options, created_at=time.time(), owner=self.config.name, egress=request.egress,
            )
            self.cluster.put_network(net)
            self.reservations.setdefault(name, set())
        if self.cluster.others_alive():
            await self._settle_network(net)
        log.info("event=network-created name=%s vni=%d subnet=%s mtu=%d", name, vni, subnet, mtu)
        return net

    async def _settle_network(self, mine: Network) -> None:
        """Wait out concurrent creations elsewhere; if another host's network wins, say so.

        Same name: the replicated table keeps one version (last writer wins, host name breaks
        ties). Same VNI or overlapping subnet under another name: the earlier creation wins.
        """
        await asyncio.sleep(self.config.settle_time)
        current = self.networks.get(mine.name)
        if current is None:
            raise Conflict(f"network {mine.name!r} was removed by another host while it was being created")
        if current.owner != mine.owner or current.created_at != mine.created_at:
            raise Conflict(
                f"network {mine.name!r} was created at the same time on host {current.owner!r} "
                f"(vni {current.vni}, subnet {current.subnet}); that one was kept, yours discarded"
            )
        for other in self.networks.values():
            if other.name == mine.name:
                continue
            clash = other.vni == mine.vni or other.ip_network.overlaps(mine.ip_network)
            if clash and (other.created_at, other.name) < (mine.created_at, mine.name):
                self.cluster.delete_network(mine.name)
                what = f"VNI {mine.vni}" if other.vni == mine.vni else f"subnet {mine.subnet}"
                raise Conflict(
                    f"{what} was claimed at the same time by network {other.name!r} on host "
                    f"{other.owner!r}; {mine.name!r} was not created, try again"
                )

    async def delete_network(self, name: str, force: bool = False) -> None:
        async with self._lock:
            net = self.get_network(name)
            attached = [ep for ep in self.cluster.endpoints().values() if ep.get("network") == name]
            if attached and not force:
                hosts = sorted({ep.get("host", "?") for ep in attached})
                raise Conflict(
                    f"network {name!r} has {len(attached)} attached endpoint(s) (on {', '.join(hosts)}); "
                    "detach them first or use --force"
                )
            self.cluster.delete_network(name)
            for ep in [e for e in self.endpoints.values() if e.network == name]:
                await self._unplug(net, ep)
            await self._kernel(self.dataplane.remove_network, net, self._sandbox(net))
            for ip in self.reservations.pop(name, set()):
                self.store.delete("addresses", name, f"{ip}.json")
            for block in self.cluster.my_blocks(name):
                self.cluster.release_block(name, block)
            self.store.delete("networks", f"{name}.json")
            log.info("event=network-removed name=%s forced_endpoints=%d", name, len(attached))

    def get_network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"no network named {name!r}; see `overlayctl network ls`") from None

    def network_view(self, net: Network) -> dict[str, Any]:
        view = net.to_dict()
        everywhere = [ep for ep in self.cluster.endpoints().values() if ep.get("network") == net.name]
        view["endpoints"] = sum(1 for ep in self.endpoints.values() if ep.network == net.name)
        view["endpoints_cluster"] = len(everywhere)
        view["hosts"] = sorted({ep.get("host", "") for ep in everywhere})
        return view

    # ---- addresses -------------------------------------------------------------------------

    def _used_ips(self, net: Network) -> set[str]:
        used = {ep["ip"] for ep in self.cluster.endpoints().values() if ep.get("network") == net.name}
        used |= {ep.ip for ep in self.endpoints.values() if ep.network == net.name}
        used |= self.cluster.reserved_addresses(net.name)
        return used | self.reservations.get(net.name, set())

    def _release_empty_blocks(self, net: Network) -> None:
        mine = {ep.ip for ep in self.endpoints.values() if ep.network == net.name}
        self.blocks.release_unused(net, mine | self.reservations.get(net.name, set()))

    async def reserve_address(self, network: str, ip: str | None) -> tuple[str, int]:
        async with self._lock:
            net = self.get_network(network)
            addr = await self.blocks.allocate(net, lambda: self._used_ips(net), ip)
            try:
                self.store.write({"ip": addr, "created_at": time.time()}, "addresses", net.name, f"{addr}.json")
            except InsufficientStorage:
                self._release_empty_blocks(net)
                raise
            self.reservations.setdefault(net.name, set()).add(addr)
            self.cluster.reserve_address(net.name, addr)
            return addr, net.ip_network.prefixlen

    async def release_address(self, network: str, ip: str) -> None:
        async with self._lock:
            net = self.get_network(network)
            if ip in self.reservations.get(net.name, set()):
                # Only a reservation this host holds: Docker releases after DeleteEndpoint, by which
                # time the address may be someone else's.
                self.reservations[net.name].discard(ip)
                self.store.delete("addresses", net.name, f"{ip}.json")
                self.cluster.release_address(net.name, ip)
                self._release_empty_blocks(net)

    # ---- endpoints -------------------------------------------------------------------------

    async def create_endpoint(self, request: EndpointCreate) -> Endpoint:
        net_name = request.network
        ifname = model.validate_ifname(request.ifname or "eth0")
        endpoint_id = request.id or uuid.uuid4().hex
        if not endpoint_id.isalnum() or len(endpoint_id) < 12:
            raise BadRequest(f"invalid endpoint id {endpoint_id!r}: at least 12 letters or digits")
        target = request.netns
        labels = model.validate_labels(request.labels)
        names = model.validate_dns_names(request.names)
        async with self._lock:
            net = self.get_network(net_name)
            if endpoint_id in self.endpoints:
                raise Conflict(f"endpoint {endpoint_id} already exists")
            netns_path: str | None = None
            if target is not None:
                try:
                    netns_path = await self._kernel(kernel.resolve_netns, target)
                except KernelError as e:
                    raise BadRequest(str(e)) from None
                identity = await self._kernel(kernel.netns_identity, netns_path)
                attached = {ep.id: ep.netns for ep in self.endpoints.values()
                            if ep.network == net.name and ep.netns}
                for ep_id in await self._kernel(kernel.netns_matching, identity, attached):
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
            for other in self.cluster.endpoints().values():
                if other.get("network") == net.name and other.get("mac") == mac:
                    raise Conflict(f"MAC {mac} is already used in network {net.name!r} (host {other.get('host')})")
            ep = Endpoint(
                id=endpoint_id, network=net.name, ip=ip, prefixlen=net.ip_network.prefixlen, mac=mac,
                ifname=ifname, netns=netns_path, mtu=net.mtu, host=self.config.name,
                vtep=self.advertise, created_at=time.time(), labels=labels, names=names,
            )
            sandbox = self._sandbox(net)
            try:
                await self._kernel(self.dataplane.ensure_network, net, sandbox)
                # Guard the port before it exists: the container speaks only as itself from frame one.
                await self._sync_guard(net, force=True, joining=ep)
                await self._kernel(kernel.ensure_veth, sandbox, self._veth_spec(ep))
            except KernelError as e:
                await self._kernel(kernel.remove_veth, sandbox, ep.id)
                self._release_empty_blocks(net)
                raise BadRequest(f"cannot attach: {e}") from None
            try:
                # Persist before anyone hears of it: a container must never be live but unsaved.
                self.store.write(ep.to_dict(), "endpoints", f"{ep.id}.json")
            except InsufficientStorage:
                await self._undo_attach(net, ep)
                raise
            self.endpoints[ep.id] = ep
            self.cluster.put_endpoint(ep)
            if taking_reservation:
                reserved.discard(ip)
                self.store.delete("addresses", net.name, f"{ip}.json")
                self.cluster.release_address(net.name, ip)
            self._programmed.pop(net.name, None)
            self._zones.pop(net.name, None)
            log.info("event=attached endpoint=%s network=%s ip=%s mac=%s netns=%s names=%s",
                     ep.id[:12], net.name, ip, mac, netns_path, ",".join(names) or "-")
        if requested_ip and not taking_reservation and self.cluster.others_alive():
            await self._settle_requested_ip(ep)
        self._dirty.set()
        return ep

    async def _undo_attach(self, net: Network, ep: Endpoint) -> None:
        """Take back the kernel side of an attach that could not be saved."""
        await self._kernel(kernel.remove_veth, self._sandbox(net), ep.id)
        if not any(e.network == net.name for e in self.endpoints.values()) and not any(
                u.network == net.name for u in self.unknown.values()):
            await self._kernel(self.dataplane.remove_network, net, self._sandbox(net))
            self._programmed.pop(net.name, None)
        self._release_empty_blocks(net)
        log.error("event=attach-undone endpoint=%s network=%s reason=state-dir-full", ep.id[:12], net.name)

    async def _settle_requested_ip(self, ep: Endpoint) -> None:
        """A requested address may sit in another host's block: if that host handed it out at the
        same moment, its endpoint wins and ours is undone."""
        net = self.get_network(ep.network)
        holder = self.blocks.holder(net, ipam.block_of(net.subnet, ep.ip))
        if holder == self.config.name:
            return
        await asyncio.sleep(self.config.settle_time)
        for other in self.cluster.endpoints().values():
            if other.get("network") == ep.network and other.get("ip") == ep.ip and other.get("id") != ep.id:
                await self.delete_endpoint(ep.id)
                raise Conflict(f"IP {ep.ip} was handed out at the same moment on host {other.get('host')!r}; "
                               "pick another or omit --ip")

    async def set_endpoint_names(self, endpoint_id: str, names: list[str]) -> Endpoint:
        """Change what may change on a live endpoint: its DNS names (replaced as a whole)."""
        names = model.validate_dns_names(names)
        async with self._lock:
            ep = self.get_endpoint(endpoint_id)
            self.store.write({**ep.to_dict(), "names": names}, "endpoints", f"{ep.id}.json")
            ep.names = names
            self.cluster.put_endpoint(ep)
            self._zones.pop(ep.network, None)
            log.info("event=endpoint-named endpoint=%s network=%s names=%s", ep.id[:12], ep.network,
                     ",".join(names) or "-")
            return ep

    async def delete_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """Detach an endpoint; for an `unknown` one, remove its veth and its unreadable file."""
        async with self._lock:
            unknown = [u for u in self.unknown.values() if endpoint_id and u.id.startswith(endpoint_id)]
            if endpoint_id not in self.endpoints and len(unknown) == 1:
                await self._forget_unknown(unknown[0])
                return None
            ep = self.get_endpoint(endpoint_id)
            net = self.networks.get(ep.network)
            await self._unplug(net, ep)
            return ep

    async def delete_endpoint_by_netns(self, network: str, netns_spec: str) -> Endpoint:
        net = self.get_network(network)
        try:
            path = await self._kernel(kernel.resolve_netns, netns_spec)
            identity = await self._kernel(kernel.netns_identity, path)
        except KernelError as e:
            raise BadRequest(str(e)) from None
        attached = {ep.id: ep.netns for ep in self.endpoints.values() if ep.network == net.name and ep.netns}
        for ep_id in await self._kernel(kernel.netns_matching, identity, attached):
            ep = self.endpoints.get(ep_id)  # may have gone while the kernel call ran
            if ep is None:
                continue
            async with self._lock:
                await self._unplug(net, ep)
            return ep
        raise NotFound(f"namespace {netns_spec} is not attached to network {network!r}")

    async def _forget_unknown(self, unknown: UnknownEndpoint) -> None:
        if unknown.sandbox is not None:
            await self._kernel(kernel.remove_veth, unknown.sandbox, unknown.id)
        try:
            os.unlink(unknown.file)
        except FileNotFoundError:
            pass
        self._unreadable.pop(unknown.id, None)
        del self.unknown[unknown.id]
        self.cluster.delete_endpoint(unknown.id)
        log.info("event=unknown-endpoint-removed endpoint=%s network=%s", unknown.id[:12], unknown.network or "-")
        self._dirty.set()

    async def _unplug(self, net: Network | None, ep: Endpoint) -> None:
        """Remove an endpoint everywhere; `net` is None when the network is already gone."""
        sandbox = self._sandbox(net) if net else None
        if sandbox is not None:
            await self._kernel(kernel.remove_veth, sandbox, ep.id)
        self.store.delete("endpoints", f"{ep.id}.json")
        self.endpoints.pop(ep.id, None)
        self.cluster.delete_endpoint(ep.id)
        self._zones.pop(ep.network, None)
        log.info("event=detached endpoint=%s network=%s ip=%s", ep.id[:12], ep.network, ep.ip)
        if net is not None:
            self._release_empty_blocks(net)
            if not any(e.network == net.name for e in self.endpoints.values()):
                # The sandbox exists only while the network has endpoints on this host.
                await self._kernel(self.dataplane.remove_network, net, self._sandbox(net))
                self._programmed.pop(net.name, None)
                self._guarded.pop(net.name, None)
        self._dirty.set()

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
        net = self.networks.get(ep.network)
        if net is None:
            return False
        try:
            present = await self._kernel(kernel.list_endpoint_links, self._sandbox(net))
        except KernelError:
            return False
        return kernel.endpoint_prefix(ep.id) in present

    def endpoint_view(self, ep: Endpoint) -> dict[str, Any]:
        view = ep.to_dict()
        view["host_ifname"] = kernel.host_veth_name(ep.id)
        view["container_ifname"] = kernel.container_veth_name(ep.id)
        net = self.networks.get(ep.network)
        view["gateway"] = net.gateway if net else None
        view["egress"] = bool(net and net.egress)
        return view

    # ---- programming -----------------------------------------------------------------------

    def _sandbox(self, net: Network) -> str:
        return kernel.sandbox_path(self.config.state_dir, net.vni)

    def _veth_spec(self, ep: Endpoint) -> kernel.VethSpec:
        # With egress, the container's default route goes via the anycast gateway into the sandbox
        # (kernel/egress.py); otherwise the gateway is only the DNS address, never a route.
        net = self.networks.get(ep.network)
        gateway = net.gateway if net is not None and net.egress and ep.netns is not None else None
        return kernel.VethSpec(
            endpoint_id=ep.id, target_netns=ep.netns, ifname=ep.ifname, mac=ep.mac,
            address_cidr=ep.address_cidr, mtu=ep.mtu, gateway=gateway,
        )

    def _lingering(self) -> set[str]:
        """Members declared dead less than `withdraw_delay` ago: their entries stay programmed."""
        now = time.monotonic()
        return {name for name, at in self._failed_at.items() if now - at < self.config.withdraw_delay}

    def _visible_endpoints(self) -> list[dict[str, Any]]:
        endpoints = list(self.cluster.endpoints().values())
        lingering = self._lingering()
        if lingering:
            endpoints += self.cluster.endpoints_of(lingering)
        return endpoints

    def desired_forwarding(self, net: Network) -> Forwarding:
        fwd = forwarding_for(net.name, self.advertise, self._visible_endpoints())
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
            overlay_ifname=self.dataplane.overlay_port(net),
            ports=tuple(kernel.GuardedPort(kernel.host_veth_name(ep.id), ep.mac, ep.ip) for ep in local),
            known_macs=frozenset(str(ep["mac"]) for ep in self._visible_endpoints()
                                 if ep.get("network") == net.name and ep.get("mac")),
            gateway_ip=net.gateway, gateway_mac=net.gateway_mac,
            bum_rate=self.config.bum_rate, bum_burst=self.config.bum_burst,
        )

    async def _sync_guard(self, net: Network, force: bool = False, joining: Endpoint | None = None) -> None:
        """Program the guard when it changed, or (force) when its table is missing from the sandbox.

        Rewriting an unchanged guard would refill every port's BUM bucket: not on every resync.
        """
        guard = self.port_guard(net, joining)
        sandbox = self._sandbox(net)
        programmed = self._guarded.get(net.name)
        if programmed == guard:
            if not force:
                return
            counters = await self._kernel(kernel.drop_counters, sandbox)
            if counters:  # the table is there
                return
            programmed = None  # it is not: write all of it
        await self._kernel(kernel.sync_port_guard, sandbox, guard, programmed)
        self._guarded[net.name] = guard

    def _zone_for(self, network: str) -> Zone | None:
        """The names the DNS server of `network` answers (cached until the endpoints change)."""
        zone = self._zones.get(network)
        if zone is None:
            net = self.networks.get(network)
            if net is None:
                return None
            zone = self._zones[network] = Zone.build(net.name, net.subnet, self._visible_endpoints())
        return zone

    async def _sync_dns(self) -> None:
        wanted = {}
        for name in {ep.network for ep in self.endpoints.values()}:
            net = self.networks.get(name)
            if net is not None and net.gateway:
                wanted[name] = (net.gateway, self._sandbox(net))
        await self.dns.sync(wanted)

    async def program(self, force: bool = False) -> int:
        """Push remote endpoints into the dataplane of every network with a local endpoint."""
        async with self._lock:
            networks = self.networks
            changed = 0
            lingering = self._lingering()
            peers = {str(m.meta.get("vtep")) for m in self.cluster.members()
                     if m.name != self.config.name and m.meta.get("vtep")
                     and (m.state in ("alive", "suspect") or m.name in lingering)}
            if not self._synced and self._peers is not None:
                peers |= self._peers
            if force or peers != self._peers:
                try:
                    await self._kernel(self.dataplane.sync_peers, peers)
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
                guard_error = None
                try:
                    await self._sync_guard(net, force)
                except KernelError as e:
                    self.counters["program_errors"] += 1
                    guard_error = self.program_failures[f"network {name}"] = f"first-hop guard: {e}"
                    log.error("event=program-failed what=port-guard network=%s error=%s", name, e)
                fwd = self.desired_forwarding(net)
                if not self._synced:
                    fwd = await self._keep_programmed(net, fwd)
                fingerprint = (tuple(sorted(fwd.fdb.items())), tuple(sorted(fwd.neigh.items())),
                               tuple(sorted(fwd.flood)))
                if not force and self._programmed.get(name) == fingerprint:
                    continue
                try:
                    n = await self._kernel(self.dataplane.program, net, self._sandbox(net), fwd)
                except KernelError as e:
                    self.counters["program_errors"] += 1
                    self.program_failures[f"network {name}"] = str(e)
                    log.error("event=program-failed network=%s error=%s", name, e)
                    continue
                if guard_error is None:
                    self.program_failures.pop(f"network {name}", None)
                self._programmed[name] = fingerprint
                changed += n
                if n or not force:
                    log.info("event=programmed network=%s fdb=%d neigh=%d flood=%d changed=%d",
                             name, len(fwd.fdb), len(fwd.neigh), len(fwd.flood), n)
            await self._sync_egress(networks, force)
            self._zones.clear()  # membership (and lingering) may have changed what is visible
            try:
                await self._sync_dns()
            except Exception:
                log.exception("event=dns-sync-failed")
            self.counters["programmed_passes"] += 1
            self.counters["entries_changed"] += changed
            return changed

    def desired_egress(self, networks: dict[str, Network]) -> list[kernel.EgressSpec]:
        """Egress of every --egress network with an endpoint here, with this host's container addresses."""
        wanted = []
        for name in sorted({ep.network for ep in self.endpoints.values()}):
            net = networks.get(name)
            if net is None or not net.egress or not net.gateway:
                continue
            ips = frozenset(ep.ip for ep in self.endpoints.values() if ep.network == name and ep.netns is not None)
            wanted.append(kernel.EgressSpec(net.vni, net.subnet, self._sandbox(net), ips))
        return wanted

    async def _sync_egress(self, networks: dict[str, Network], force: bool) -> None:
        wanted = self.desired_egress(networks)
        if not force and wanted == self._egress:
            return
        try:
            await self._kernel(kernel.sync_egress, wanted)
            self._egress = wanted
            if wanted:
                log.info("event=egress-programmed networks=%s", ",".join(str(e.vni) for e in wanted))
        except KernelError as e:
            self.counters["program_errors"] += 1
            log.error("event=program-failed what=egress error=%s", e)

    async def _keep_programmed(self, net: Network, fwd: Forwarding) -> Forwarding:
        """Desired entries plus whatever is programmed now (the startup hold: add, never remove)."""
        try:
            now = await self._kernel(self.dataplane.programmed, net, self._sandbox(net))
        except KernelError:
            return fwd
        return Forwarding(
            fdb={**{e["mac"]: e["vtep"] for e in now["fdb"]}, **fwd.fdb},
            neigh={**{e["ip"]: e["mac"] for e in now["neigh"]}, **fwd.neigh},
            flood=set(now["flood"]) | fwd.flood,
        )

    async def reconcile(self) -> dict[str, Any]:
        """Make the kernel match the desired state; forget endpoints whose container is gone."""
        summary: dict[str, Any] = {"repaired": 0, "forgotten": 0, "stale_removed": 0, "errors": [],
                                   "devices_repaired": []}
        started = time.monotonic()
        async with self._lock:
            for net in self.cluster.orphaned_networks():
                self.cluster.put_network(net)
                log.info("event=network-adopted name=%s previous_writer=%s", net.name, net.owner)
            networks = self.networks
            for ep in [e for e in self.endpoints.values() if e.network not in networks]:
                # The network was removed cluster-wide (maybe while we were away).
                await self._unplug(None, ep)
                summary["forgotten"] += 1
            wanted_sandboxes = set()
            for net in networks.values():
                local = [ep for ep in self.endpoints.values() if ep.network == net.name]
                if not local and not any(u.network == net.name for u in self.unknown.values()):
                    continue
                sandbox = self._sandbox(net)
                wanted_sandboxes.add(sandbox)
                try:
                    for device in await self._kernel(self.dataplane.ensure_network, net, sandbox):
                        # A fast-path or VXLAN device that had gone missing: traffic of this network
                        # was cut until now. Say so loudly (status, the reconcile answer, the log).
                        summary["devices_repaired"].append(f"{net.name}: {device}")
                        summary["repaired"] += 1
                        self._programmed.pop(net.name, None)
                        log.warning("event=device-repaired network=%s device=%s", net.name, device)
                    await self._sync_guard(net, force=True)  # before any port is repaired
                    present = await self._kernel(kernel.list_endpoint_links, sandbox)
                    for ep in local:
                        if kernel.endpoint_prefix(ep.id) in present:
                            continue
                        if ep.netns is not None and not os.path.exists(ep.netns):
                            # The container's namespace is gone, and its veth with it.
                            self.store.delete("endpoints", f"{ep.id}.json")
                            del self.endpoints[ep.id]
                            self.cluster.delete_endpoint(ep.id)
                            summary["forgotten"] += 1
                            log.info("event=endpoint-gone endpoint=%s network=%s ip=%s", ep.id[:12], net.name, ep.ip)
                            continue
                        await self._kernel(kernel.ensure_veth, sandbox, self._veth_spec(ep))
                        summary["repaired"] += 1
                        log.info("event=endpoint-repaired endpoint=%s network=%s", ep.id[:12], net.name)
                    known = {kernel.endpoint_prefix(ep.id) for ep in self.endpoints.values() if ep.network == net.name}
                    known |= self._kept_prefixes()
                    for key in present - known:
                        await self._kernel(kernel.remove_veth, sandbox, key)
                        summary["stale_removed"] += 1
                        log.info("event=stale-veth-removed key=%s network=%s", key, net.name)
                    self._release_empty_blocks(net)
                except (KernelError, OSError) as e:
                    summary["errors"].append(f"{net.name}: {e}")
                    log.error("event=reconcile-failed network=%s error=%s", net.name, e)
            for sandbox in await self._kernel(kernel.list_sandboxes, self.config.state_dir):
                if sandbox not in wanted_sandboxes and not (
                        await self._kernel(kernel.list_endpoint_links, sandbox) & self._kept_prefixes()):
                    await self._kernel(kernel.remove_sandbox, sandbox)
                    summary["stale_removed"] += 1
                    log.info("event=stale-sandbox-removed path=%s", sandbox)
        summary["programmed_changes"] = await self.program(force=True)
        RECONCILE_SECONDS.observe(time.monotonic() - started)
        RECONCILE_ERRORS.inc(len(summary["errors"]))
        summary["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        summary["at"] = time.time()
        self.last_reconcile = summary
        return summary

    async def programmed(self, name: str) -> dict[str, Any]:
        """What this host programmed for a network, and what it wants programmed."""
        net = self.get_network(name)
        actual = await self._kernel(self.dataplane.programmed, net, self._sandbox(net))
        fwd = self.desired_forwarding(net)
        local = any(ep.network == name for ep in self.endpoints.values())
        return {
            "network": name, "vni": net.vni, "local_endpoints": local,
            "programmed": actual,
            "desired": {"fdb": [{"mac": m, "vtep": v} for m, v in sorted(fwd.fdb.items())],
                        "flood": sorted(fwd.flood),
                        "neigh": [{"ip": i, "mac": m} for i, m in sorted(fwd.neigh.items())]}
            if local else {"fdb": [], "flood": [], "neigh": []},
        }

    # ---- keyring ---------------------------------------------------------------------------

    def keys(self) -> dict[str, Any]:
        if self.keyring is None:
            return {"encrypted": False, "keys": [], "primary": None, "key_file": None}
        ids = self.keyring.key_ids()
        return {"encrypted": True, "primary": ids[0], "key_file": str(self.keyring.path),
                "keys": [{"id": kid, "primary": i == 0} for i, kid in enumerate(ids)]}

    async def key_op(self, op: str, key_text: str) -> dict[str, Any]:
        """install / use / remove a key here and on every member (the op is gossiped, encrypted)."""
        if self.keyring is None or self.node is None:
            raise BadRequest("gossip runs without encryption (--plaintext): there is no keyring to change")
        try:
            key = decode_key(key_text)
            changed = self.node.key_op(op, key)
        except KeyringError as e:
            raise BadRequest(str(e)) from None
        # Saved by _on_gossip_event (KeyringChange), the key file's one writer, before key_op returns.
        log.info("event=key-%s key_id=%s changed=%s", op, key_id(key).hex(), changed)
        return {"op": op, "changed": changed, **self.keys()}

    # ---- health and status -----------------------------------------------------------------

    async def _watch_auth_failures(self) -> None:
        """Sample gossip's authentication failures, so health can tell recent ones from old ones."""
        while True:
            self._recent_auth_failures()
            await asyncio.sleep(5)

    def _recent_auth_failures(self) -> int:
        failed = int(self.node.stats().get("auth_failed", 0)) if self.node is not None else 0
        return self._auth_failures.observe(failed, time.monotonic())

    async def health(self) -> Health:
        others = [m for m in self.cluster.members() if m.name != self.config.name]
        return assess(Facts(
            dead_peers=sum(1 for m in others if m.state == "dead"),
            live_peers=sum(1 for m in others if m.state in ("alive", "suspect")),
            program_errors=dict(self.program_failures),
            reconcile_errors=list(self.last_reconcile.get("errors", [])),
            dns_errors=dict(self.dns.errors),
            fastpathd_error=await self._kernel(self.dataplane.health_error),
            recent_auth_failures=self._recent_auth_failures(),
        ))


    async def dataplane_stats(self) -> dict[str, Any]:
        """The dataplane's counters ("networks": per VNI, from the fast path or, in kernel mode, the
        VXLAN devices), the first-hop guard's drops by reason ("port_drops", both modes); "names"
        maps each counted VNI to its network's name."""
        stats = await self._kernel(self.dataplane.stats)
        port_drops = {}
        device_counters = {}  # kernel mode: each network's VXLAN device
        for name in sorted({ep.network for ep in self.endpoints.values()}):
            net = self.networks.get(name)
            if net is not None:
                counters = await self._kernel(kernel.drop_counters, self._sandbox(net))
                port_drops[str(net.vni)] = {reason: c["packets"] for reason, c in counters.items()}
                if self.config.dataplane == "kernel":
                    device = await self._kernel(kernel.vxlan_counters, self._sandbox(net), net.vni)
                    if device is not None:
                        device_counters[str(net.vni)] = device
        if device_counters:
            stats["networks"] = device_counters
        by_vni = {str(net.vni): net.name for net in self.networks.values()}
        names = {str(vni): by_vni.get(str(vni), "") for vni in [*(stats.get("networks") or {}), *port_drops]}
        return {"dataplane": self.config.dataplane, **stats, "port_drops": port_drops, "names": names}

    async def doctor(self) -> dict[str, Any]:
        """Check the underlay to every other member: ports and path MTU (agent/doctor.py)."""
        peers = [m for m in self.cluster.members() if m.name != self.config.name and m.state != "left"]
        results = await asyncio.gather(*(
            doctor.check_peer(m.name, m.addr, m.port, str(m.meta.get("vtep") or m.addr), self.config.vxlan_port,
                              self.underlay_mtu, m.meta.get("dataplane"))
            for m in sorted(peers, key=lambda m: m.name)))
        networks = [(n.name, n.mtu) for n in sorted(self.networks.values(), key=lambda n: n.name)]
        return {"host": self.config.name, "advertise": self.advertise, "underlay_mtu": self.underlay_mtu,
                "peers": list(results), "warnings": doctor.warnings_for(list(results), networks)}

    async def metrics_snapshot(self) -> Snapshot:
        """What a Prometheus scrape reports: read now from the counters that exist anyway.

        Passive: health is judged first, and with fastpathd down the counters are not asked for
        (asking would start it again; that is the reconciler's job, and the scrape must show the gap)."""
        health = await self.health()
        dataplane_stats: dict[str, Any] | None = None
        if await self._kernel(self.dataplane.health_error) is None:
            try:
                dataplane_stats = await self.dataplane_stats()
            except KernelError:
                dataplane_stats = None
        members = self.cluster.members()
        states = {state: sum(1 for m in members if m.state == state) for state in ("alive", "suspect", "dead", "left")}
        return Snapshot(
            dataplane=self.config.dataplane, dataplane_stats=dataplane_stats,
            network_names={str(net.vni): net.name for net in self.networks.values()},
            gossip=self.node.stats() if self.node is not None else {}, members_by_state=states,
            tables={t: len(self.node.table(t)) if self.node else 0 for t in (NETWORKS, ENDPOINTS, IPAM)},
            networks=len(self.networks), endpoints=len(self.endpoints), program=dict(self.counters),
            dns=self.dns.status(), degraded=not health.ok,
        )

    async def status(self) -> dict[str, Any]:
        members = self.cluster.members()
        dataplane_status = await self._kernel(self.dataplane.status)
        gossip = self.node.stats() if self.node is not None else {}
        return {
            "name": self.config.name,
            "node_id": self.node_id,
            "version": __version__,
            "advertise": self.advertise,
            "vxlan_port": self.config.vxlan_port,
            "gossip_port": self.config.gossip_port,
            "dataplane": self.config.dataplane,
            "dataplane_status": dataplane_status,
            "underlay_mtu": self.underlay_mtu,
            "state_dir": self.config.state_dir,
            "networks": len(self.networks),
            "endpoints": len(self.endpoints),
            "endpoints_unknown": [u.view() for u in self.unknown.values()],
            "cluster": {
                "members": len(members),
                "alive": sum(1 for m in members if m.state == "alive"),
                "suspect": sum(1 for m in members if m.state == "suspect"),
                "dead": sum(1 for m in members if m.state in ("dead", "left")),
            },
            "tables": {t: len(self.node.table(t)) if self.node else 0 for t in (NETWORKS, ENDPOINTS, IPAM)},
            "keyring": {"encrypted": self.keyring is not None,
                        "keys": gossip.get("keys", []), "primary": gossip.get("primary_key")},
            "gossip": gossip,
            "counters": dict(self.counters),
            "uptime_s": round(time.time() - self.started_at, 1),
            "last_reconcile": self.last_reconcile,
            "program_failures": dict(self.program_failures),
            "dns": self.dns.status(),
            "health": (await self.health()).to_dict(),
        }
