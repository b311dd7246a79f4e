"""What every part of the agent shares: this host's config, its state dir, the one kernel thread
and the dataplane mode.

The parts (networks.py, endpoints.py, programmer.py, reconciler.py) hold a `Host` instead of each
other's internals. Every file the agent keeps in its state dir is written or deleted here, so the
state dir's layout is in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from overlaynet import kernel
from overlaynet.agent.cluster import Cluster
from overlaynet.agent.config import Config
from overlaynet.agent.kernel_mode import KernelMode
from overlaynet.agent.state import StateStore
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.errors import NotFound
from overlaynet.model import Endpoint, Network

T = TypeVar("T")
log = logging.getLogger("overlaynet.agent")
# A kernel call (waiting for the one kernel thread included) this slow holds up every other one:
# attaches, program passes, reconciles. Said in the log, with the call's name, to find what it was.
SLOW_KERNEL_CALL = 1.0


class Host:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.name = config.name
        self.store = StateStore(config.state_dir)
        self.advertise = config.advertise or ""
        self.underlay_mtu = 1500
        self.mode: KernelMode | UserspaceMode | None = None
        self.cluster: Cluster = None  # type: ignore[assignment]  # set by Agent.start()
        # One lock for every change of local state and the kernel: mutations, programming, reconcile.
        self.lock = asyncio.Lock()
        self.dirty = asyncio.Event()  # set: the dataplane should be programmed again (coalesced)
        # One thread for all netlink work: kernel verbs run in order, never concurrently.
        self._kernel_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")

    @property
    def dataplane(self) -> KernelMode | UserspaceMode:
        assert self.mode is not None, "start() sets the dataplane mode"
        return self.mode

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            return await loop.run_in_executor(self._kernel_pool, fn, *args)
        finally:
            took = time.monotonic() - started
            if took > SLOW_KERNEL_CALL:
                log.warning("event=kernel-call-slow call=%s seconds=%.2f", getattr(fn, "__qualname__", repr(fn)), took)

    def close(self) -> None:
        self._kernel_pool.shutdown(wait=True)

    def sandbox(self, net: Network) -> str:
        return kernel.sandbox_path(self.config.state_dir, net.vni)

    @property
    def networks(self) -> dict[str, Network]:
        return self.cluster.networks()

    def get_network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"no network named {name!r}; see `overlayctl network ls`") from None

    # ---- the state dir: every write and delete of the agent's files ------------------------

    def save_endpoint(self, ep: Endpoint, **changes: Any) -> None:
        self.store.write({**ep.to_dict(), **changes}, "endpoints", f"{ep.id}.json")

    def forget_endpoint(self, endpoint_id: str) -> None:
        self.store.delete("endpoints", f"{endpoint_id}.json")

    def save_network(self, net: Network) -> None:
        self.store.write(net.to_dict(), "networks", f"{net.name}.json")

    def forget_network(self, name: str) -> None:
        self.store.delete("networks", f"{name}.json")

    def save_reservation(self, network: str, ip: str) -> None:
        self.store.write({"ip": ip, "created_at": time.time()}, "addresses", network, f"{ip}.json")

    def forget_reservation(self, network: str, ip: str) -> None:
        self.store.delete("addresses", network, f"{ip}.json")

    def save_netkeys(self, network: str, data: dict[str, Any]) -> None:
        """An encrypted network's secrets: only ever in the 0700 state dir (atomic, like every file)."""
        self.store.write(data, "netkeys", f"{network}.json")

    def forget_netkeys(self, network: str) -> None:
        self.store.delete("netkeys", f"{network}.json")

    def save_identity(self, node: dict[str, Any]) -> None:
        self.store.write(node, "node.json")

    def save_peers(self, peers: list[dict[str, Any]]) -> None:
        self.store.write(peers, "members.json")
