"""The agent: this host's endpoints, its view of the cluster, and the kernel kept equal to both.

Desired state = networks and endpoints of the whole cluster (gossip tables) + this host's own
endpoints (state dir). `Agent` is the facade the API calls: it owns the lifecycle, the host's
identity, gossip events, the keyring and status, and wires the parts that do the work:

  host.py        the shared context: config, state dir, the kernel thread, the dataplane mode
  networks.py    networks and their settle rules
  netkeys.py     encrypted networks' secrets, key epochs and rotation
  endpoints.py   this host's endpoints and address reservations
  programmer.py  desired state -> dataplane (peers, first-hop guard, forwarding, egress, DNS)
  reconciler.py  reconcile, level-triggered and idempotent, and the loops that run it
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from typing import Any

from overlaynet import __version__, kernel
from overlaynet.agent import doctor
from overlaynet.agent.blocks import BlockAllocator
from overlaynet.agent.cluster import ENDPOINTS, IPAM, NETKEYS, NETWORKS, Cluster
from overlaynet.agent.config import Config, parse_seed
from overlaynet.agent.endpoints import Endpoints
from overlaynet.agent.health import Facts, Health, RecentIncrease, assess
from overlaynet.agent.host import Host
from overlaynet.agent.kernel_mode import KernelMode
from overlaynet.agent.metrics import Snapshot
from overlaynet.agent.netkeys import NetworkKeys
from overlaynet.agent.networks import Networks
from overlaynet.agent.programmer import Programmer
from overlaynet.agent.reconciler import Reconciler
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.errors import BadRequest, InsufficientStorage
from overlaynet.gossip.keyring import Keyring, KeyringError, decode_key, key_id
from overlaynet.gossip.state import KeyringChange, MemberChange, TableChange
from overlaynet.gossip.transport import GossipNode
from overlaynet.kernel import KernelError
from overlaynet.model import Endpoint, Network

log = logging.getLogger("overlaynet.agent")

# A join that found no seed is retried with doubling, jittered delays. The cap is short because a
# seed that cannot answer is usually busy (many hosts starting at once), not gone for minutes, and
# a retry is one TCP exchange: at a 30 s cap, a host that missed its first tries of a mass start
# sat idle long after the seed was free again.
JOIN_RETRY_FIRST = 1.0
JOIN_RETRY_MAX = 8.0


class Agent:
    def __init__(self, config: Config, keyring: Keyring | None, reset_identity: bool = False) -> None:
        self.config = config
        self.reset_identity = reset_identity  # --reset-identity: a new node id if node.json is unreadable
        self.keyring = keyring
        self.host = Host(config)
        self.store = self.host.store
        self.node_id = ""
        self.node: GossipNode | None = None
        self.cluster: Cluster = None  # type: ignore[assignment]  # set in start()
        self.started_at = time.time()
        self._auth_failures = RecentIncrease()
        self._saved_peers: list[dict[str, Any]] | None = None  # members.json as this process last wrote it
        self._tasks: list[asyncio.Task[None]] = []
        self.keys_of_networks = NetworkKeys(self.host, gossip_encrypted=keyring is not None)
        self.programmer = Programmer(self.host, {}, self.keys_of_networks)
        self.local = Endpoints(self.host, self.programmer)
        self.nets = Networks(self.host, self.local, self.keys_of_networks)
        self.reconciler = Reconciler(self.host, self.local, self.programmer)
        self.endpoints: dict[str, Endpoint] = self.local.endpoints  # this host's endpoints
        self.unknown = self.local.unknown
        self.dns = self.programmer.dns
        # The API's verbs, each served by the part that owns it.
        self.create_network = self.nets.create_network
        self.delete_network = self.nets.delete_network
        self.get_network = self.host.get_network
        self.network_view = self.nets.network_view
        self.reserve_address = self.local.reserve_address
        self.release_address = self.local.release_address
        self.create_endpoint = self.local.create_endpoint
        self.set_endpoint_names = self.local.set_endpoint_names
        self.delete_endpoint = self.local.delete_endpoint
        self.delete_endpoint_by_netns = self.local.delete_endpoint_by_netns
        self.get_endpoint = self.local.get_endpoint
        self.endpoint_present = self.local.endpoint_present
        self.endpoint_view = self.local.endpoint_view
        self.programmed = self.programmer.programmed
        self.reconcile = self.reconciler.reconcile
        self.resync_interval_changed = self.reconciler.resync_interval_changed
        self.rotate_key = self.keys_of_networks.rotate_now
        self.network_keys = self.programmer.keys_view

    @property
    def networks(self) -> dict[str, Network]:
        return self.host.networks

    @property
    def advertise(self) -> str:
        return self.host.advertise

    @property
    def underlay_mtu(self) -> int:
        return self.host.underlay_mtu

    @property
    def dataplane(self) -> KernelMode | UserspaceMode:
        return self.host.dataplane

    @property
    def last_reconcile(self) -> dict[str, Any]:
        return self.reconciler.last_reconcile

    @property
    def counters(self) -> dict[str, int]:
        return self.programmer.counters

    @property
    def program_failures(self) -> dict[str, str]:
        return self.programmer.program_failures

    # ---- lifecycle -------------------------------------------------------------------------

    def _save_keyring(self) -> None:
        """The key file's one writer (a key generated on first start, then every KeyringChange)."""
        if self.keyring is not None and self.keyring.path is not None:
            self.keyring.save()

    async def start(self) -> None:
        self.store.prepare()
        self.keys_of_networks.preload()
        if self.keyring is not None and self.keyring.path is not None and not self.keyring.path.exists():
            self._save_keyring()
        self._load_identity()
        if not self.advertise:
            self.host.advertise = await self.host.kernel(kernel.detect_advertise_address)
        elif not await self.host.kernel(kernel.is_local_address, self.advertise):
            raise BadRequest(
                f"advertise address {self.advertise} is not configured on this host; "
                "pass --advertise with one of this host's IPv4 addresses"
            )
        self.host.underlay_mtu = await self.host.kernel(kernel.underlay_mtu, self.advertise)
        home = await self.host.kernel(kernel.pin_sandboxes_outside_private_mounts)
        if home is not None:
            # e.g. started by `ip netns exec`: our mounts would die with us, and every sandbox with them
            log.warning("event=private-mount-namespace action=pin-sandbox-mounts mount_ns=\"%s\"", home)
        self.host.mode = self._make_mode()
        await self.host.kernel(self.dataplane.start)
        cached_networks = self._load_state()

        self.node = GossipNode(
            name=self.config.name, advertise=self.advertise, bind=self.config.bind, port=self.config.gossip_port,
            keyring=self.keyring, meta={"vtep": self.advertise, "node_id": self.node_id,
                                        "dataplane": self.config.dataplane},
        )
        self.cluster = self.host.cluster = Cluster(self.node, self.config.name)
        self.local.blocks = BlockAllocator(self.cluster, self.config.name, self.config.settle_time,
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
                self.programmer.synced = True
            else:
                log.warning("event=join-failed seeds=%s action=retrying-in-background",
                            ",".join(f"{a}:{p}" for a, p in seeds))
                self._tasks.append(asyncio.create_task(self._join_until_contact(seeds)))
                self._tasks.append(asyncio.create_task(self._end_startup_hold()))
        else:
            self.programmer.synced = True  # a new cluster of one: nothing to wait for
        await self.local.rebuild_unreadable(cached_networks)
        self._restore(cached_networks)
        await self.reconcile()
        self._tasks.append(asyncio.create_task(self.reconciler.program_on_change()))
        self._tasks.append(asyncio.create_task(self.reconciler.resync_forever()))
        self._tasks.append(asyncio.create_task(self._watch_auth_failures()))
        self._tasks.append(asyncio.create_task(self.reconciler.network_keys_forever()))

    def _make_mode(self) -> KernelMode | UserspaceMode:
        if self.config.dataplane == "userspace":
            return UserspaceMode(self.config.state_dir, self.advertise, self.config.vxlan_port,
                                 spin_us=self.config.fastpath_spin_us, log_format=self.config.log_format,
                                 peer_bum_rate=self.config.peer_bum_rate, esp_port=self.config.esp_port)
        return KernelMode(self.advertise, self.config.vxlan_port, peer_bum_rate=self.config.peer_bum_rate)

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
        self.host.close()

    async def _join_until_contact(self, seeds: list[tuple[str, int]]) -> None:
        assert self.node is not None
        delay = JOIN_RETRY_FIRST
        while True:
            # Jitter: hosts that all started at once (a rack booting) must not retry in waves.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if await self.node.join(seeds):
                log.info("event=joined seeds=%s", ",".join(f"{a}:{p}" for a, p in seeds))
                self.programmer.synced = True
                await self.local.rebuild_unreadable([])
                self._restore([])
                self.host.dirty.set()
                return
            delay = min(delay * 2, JOIN_RETRY_MAX)

    async def _end_startup_hold(self) -> None:
        """Nobody answered at start: after a grace period, trust our own (lonely) view."""
        await asyncio.sleep(self.config.startup_hold)
        if not self.programmer.synced:
            log.warning("event=startup-hold-ended msg=\"no member answered; programming from the local view\"")
            self.programmer.synced = True
            self.host.dirty.set()

    def _remembered_peers(self) -> list[tuple[str, int]]:
        data = self.store.read("members.json") or []
        return [(m["addr"], int(m["port"])) for m in data
                if isinstance(m, dict) and m.get("name") != self.config.name and "addr" in m and "port" in m]

    def _remember_peers(self) -> None:
        peers: list[dict[str, Any]] = [{"name": m.name, "addr": m.addr, "port": m.port}
                                       for m in sorted(self.cluster.live_members(), key=lambda m: m.name)
                                       if m.name != self.config.name]
        # Only when the list changed: the write is fsync'd on the event loop, and in a big cluster
        # members flap between suspect and alive all the time without the list changing.
        if peers == self._saved_peers:
            return
        if peers or self._remembered_peers():
            self.host.save_peers(peers)
        self._saved_peers = peers

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
            self.host.save_identity(node)
        elif node.get("name") != self.config.name:
            log.warning("event=rename old=%s new=%s", node.get("name"), self.config.name)
            node["name"] = self.config.name
            self.host.save_identity(node)
        self.node_id = node["id"]

    def _load_state(self) -> list[Network]:
        cached = self.nets.load()
        self.local.load(cached)
        log.info("event=state-loaded networks=%d endpoints=%d", len(cached), len(self.endpoints))
        return cached

    def _restore(self, cached_networks: list[Network]) -> None:
        """Put this host's part of the cluster state back after a start or a (re)join.

        A cached network the cluster does not know is re-published, unless a tombstone says it was
        removed while we were away; our endpoints are re-published; entries the cluster still holds
        in our name but we no longer have are withdrawn.
        """
        self.nets.restore(cached_networks)
        self.keys_of_networks.restore(self.networks)
        self.local.restore()

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
                self.nets.cache_network(event.key)
            if event.table in (NETWORKS, ENDPOINTS):
                self.programmer.names_changed()
                self.host.dirty.set()
            if event.table == NETKEYS:
                self.keys_of_networks.changed(event.key)
                self.host.dirty.set()
        elif isinstance(event, KeyringChange):
            self._save_keyring()  # every change, ours or gossiped
            log.info("event=key-%s key_id=%s", event.op, event.key_id)
        elif isinstance(event, MemberChange):
            log.info("event=member-%s name=%s addr=%s", event.new or "reaped", event.name, event.member.addr)
            if event.new == "dead":
                # Keep its entries programmed a little longer: a restarting overlayd looks dead for a
                # moment, while its containers' traffic never stopped flowing.
                self.programmer.member_failed(event.name)
                asyncio.get_running_loop().call_later(self.config.withdraw_delay + 0.05, self.host.dirty.set)
            else:
                self.programmer.member_back(event.name)
            if event.new == "alive" or event.new is None or event.new == "left":
                self._remember_peers()
            self.host.dirty.set()

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
            fastpathd_error=await self.host.kernel(self.dataplane.health_error),
            recent_auth_failures=self._recent_auth_failures(),
        ))


    async def dataplane_stats(self) -> dict[str, Any]:
        """The dataplane's counters ("networks": per VNI, from the fast path or, in kernel mode, the
        VXLAN devices), the first-hop guard's drops by reason ("port_drops", both modes); "names"
        maps each counted VNI to its network's name."""
        stats = await self.host.kernel(self.dataplane.stats)
        port_drops = {}
        device_counters = {}  # kernel mode: each network's VXLAN device
        for name in sorted({ep.network for ep in self.endpoints.values()}):
            net = self.networks.get(name)
            if net is not None:
                counters = await self.host.kernel(kernel.drop_counters, self.host.sandbox(net))
                port_drops[str(net.vni)] = {reason: c["packets"] for reason, c in counters.items()}
                if self.config.dataplane == "kernel":
                    device = await self.host.kernel(kernel.vxlan_counters, self.host.sandbox(net), net.vni)
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
        if await self.host.kernel(self.dataplane.health_error) is None:
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
            dns=self.dns.status(), degraded=not health.ok, unreadable_rows=self.cluster.unreadable_rows(),
        )

    async def status(self) -> dict[str, Any]:
        members = self.cluster.members()
        dataplane_status = await self.host.kernel(self.dataplane.status)
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
