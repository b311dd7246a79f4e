"""NetworkDriver + IpamDriver: Docker's calls mapped onto overlayd's API.

Naming: a Docker network `my-network` is carried by the overlaynet network `my-network` (or the one
named with `-o name=NAME`). Docker does not send the name in CreateNetwork, so it is looked up on
the engine's API right after (see engine.py). If overlaynet already has a network of that name —
typically created on another host and spread by gossip — the Docker network attaches to it (the
subnet must match) instead of creating a second one.

Addresses: RequestAddress reserves an address in overlayd (cluster-unique); CreateEndpoint then
creates the endpoint with that address, which takes the reservation over.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import defaultdict
from typing import Any

from overlaynet import model
from overlaynet.api.client import ApiError, AsyncClient
from overlaynet.plugins.docker import protocol as p
from overlaynet.plugins.docker import requests as rq
from overlaynet.plugins.docker.engine import Engine, EngineUnavailable
from overlaynet.plugins.docker.state import DockerNetwork, DriverState

log = logging.getLogger("overlaynet.docker")


def _api_error(e: ApiError) -> p.PluginError:
    return p.PluginError(f"overlaynet: {e.message}")


class Driver:
    def __init__(self, api: AsyncClient, engine: Engine, state: DriverState,
                 default_pool: str = p.DEFAULT_POOL) -> None:
        self.api = api
        self.engine = engine
        self.state = state
        self.default_pool = default_pool
        self._picked: set[str] = set()  # default-pool subnets handed to Docker, until ReleasePool
        self._pool_lock = asyncio.Lock()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- networks --------------------------------------------------------------------------

    async def create_network(self, body: rq.CreateNetwork) -> dict[str, Any]:
        req = p.parse_create_network(body)
        other = self.state.by_subnet(req.subnet)
        if other is not None and other.docker_id != req.docker_id:
            raise p.PluginError(
                f"subnet {req.subnet} is already used by another Docker network on this host "
                f"(overlaynet network {other.name or '?'}); pick another --subnet"
            )
        net = DockerNetwork(
            docker_id=req.docker_id, subnet=req.subnet, gateway=req.gateway, name=req.name,
            vni=req.vni, mtu=req.mtu, internal=req.internal, encrypted=req.encrypted,
        )
        await self._precheck_subnet(net)
        if net.internal:
            # Docker drops -p for such networks before we hear of it: say so where operators look.
            log.warning("event=network-internal docker_id=%s msg=\"--internal: no docker_gwbridge, so no "
                        "egress and no published ports\"", net.docker_id[:12])
        self.state.networks[net.docker_id] = net
        self.state.save()
        if net.name is not None:
            # Named with -o name=: create (or attach) now, so a conflict fails `docker network create`.
            try:
                await self.ensure_network(net.docker_id)
            except p.PluginError:
                self.state.networks.pop(net.docker_id, None)
                self.state.save()
                raise
        else:
            # Docker stores the network (and so its name) only after we answer: resolve in the
            # background; CreateEndpoint waits for it if it comes first.
            task = asyncio.create_task(self._resolve_later(net.docker_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {}

    async def _precheck_subnet(self, net: DockerNetwork) -> None:
        """Fail `docker network create` early when the subnet cannot work whatever the name is."""
        try:
            existing = await self.api.list_networks()
        except ApiError as e:
            raise _api_error(e) from None
        wanted = ipaddress.IPv4Network(net.subnet)
        for other in existing:
            other_net = ipaddress.IPv4Network(other["subnet"])
            if net.name is not None and other["name"] == net.name:
                if other_net != wanted:
                    raise p.PluginError(self._subnet_mismatch(net.name, other["subnet"], net.subnet))
                continue
            if other_net.overlaps(wanted) and other_net != wanted:
                raise p.PluginError(
                    f"subnet {net.subnet} overlaps overlaynet network {other['name']} ({other['subnet']}); "
                    "pick another --subnet"
                )
            if other_net == wanted and net.name is not None:
                raise p.PluginError(
                    f"subnet {net.subnet} belongs to overlaynet network {other['name']}; name the Docker "
                    f"network {other['name']} to join it, or pick another --subnet"
                )

    @staticmethod
    def _subnet_mismatch(name: str, theirs: str, ours: str) -> str:
        return (
            f"overlaynet network {name} already exists with subnet {theirs} (asked for {ours}); "
            f"create the Docker network with --subnet {theirs} to join it"
        )

    async def _resolve_later(self, docker_id: str) -> None:
        try:
            await self.ensure_network(docker_id)
        except p.PluginError as e:
            # Reported again, to the user, by the CreateEndpoint that needs the network.
            log.warning("event=network-resolve-failed docker_id=%s error=%s", docker_id[:12], e)
        except Exception:
            log.exception("event=network-resolve-crashed docker_id=%s", docker_id[:12])

    async def ensure_network(self, docker_id: str) -> DockerNetwork:
        """Make sure the overlaynet network behind a Docker network exists; return the mapping."""
        async with self._locks[docker_id]:
            net = self.state.networks.get(docker_id)
            if net is None:
                raise p.PluginError(
                    f"Docker network {docker_id[:12]} is unknown to overlaynet-docker (its state file "
                    f"{self.state.path} does not list it); remove the network and create it again"
                )
            if net.ready:
                return net
            if net.name is None:
                try:
                    net.name = await self.engine.network_name(docker_id)
                except EngineUnavailable as e:
                    raise p.PluginError(str(e)) from None
            await self._create_or_attach(net)
            self.state.save()
            return net

    async def _create_or_attach(self, net: DockerNetwork) -> None:
        assert net.name is not None
        try:
            existing = await self.api.get_network(net.name)
        except ApiError as e:
            if e.status != 404:
                raise _api_error(e) from None
            existing = None
        created: dict[str, Any] = {}
        if existing is None:
            try:
                # Docker's gateway becomes the network's anycast gateway and DNS address (dns.md).
                created = await self.api.create_network(
                    net.name, net.subnet, vni=net.vni, mtu=net.mtu, gateway=net.gateway,
                    options={**net.options, "docker.network_id": net.docker_id}, encrypted=net.encrypted,
                )
                net.created = True
                log.info("event=network-created name=%s subnet=%s docker_id=%s", net.name, net.subnet,
                         net.docker_id[:12])
            except ApiError as e:
                if e.status != 409:
                    raise _api_error(e) from None
                # Created meanwhile (another host, spread by gossip): attach to it below.
                try:
                    existing = await self.api.get_network(net.name)
                except ApiError:
                    raise _api_error(e) from None
        if existing is not None:
            if ipaddress.IPv4Network(existing["subnet"]) != ipaddress.IPv4Network(net.subnet):
                raise p.PluginError(self._subnet_mismatch(net.name, existing["subnet"], net.subnet))
            if bool(existing.get("encrypted")) != net.encrypted:
                # Never let one host's Docker network believe it is encrypted when it is not (or the reverse).
                have = "encrypted" if existing.get("encrypted") else "not encrypted"
                raise p.PluginError(f"overlaynet network {net.name!r} already exists and is {have}; create the "
                                    "Docker network with the same -o encrypted choice on every host")
            log.info("event=network-attached name=%s subnet=%s docker_id=%s", net.name, net.subnet,
                     net.docker_id[:12])
        if (existing or created).get("gateway") != net.gateway:
            # The overlaynet network has another gateway (or none): keep Docker's address free.
            await self._reserve_gateway(net)
        net.ready = True

    async def _reserve_gateway(self, net: DockerNetwork) -> None:
        """Keep Docker's bookkeeping gateway address out of containers' reach (no router holds it,
        but `docker network inspect` shows it, and a container owning it would confuse users)."""
        assert net.name is not None
        if net.gateway is None or net.gateway_reserved:
            return
        try:
            await self.api.reserve_address(net.name, net.gateway)
            net.gateway_reserved = True
        except ApiError as e:
            if e.status not in (400, 409):  # 409: another host reserved it already
                raise _api_error(e) from None

    async def delete_network(self, body: rq.NetworkOnly) -> dict[str, Any]:
        docker_id = body.network_id
        async with self._locks[docker_id]:
            net = self.state.networks.get(docker_id)
            if net is None or net.name is None:
                self.state.networks.pop(docker_id, None)
                self.state.save()
                return {}
            try:
                if net.created:
                    # The host that created it removes it, unless containers (anywhere) still use it.
                    await self.api.delete_network(net.name)
                    log.info("event=network-removed name=%s", net.name)
                elif net.gateway_reserved and net.gateway:
                    await self.api.release_address(net.name, net.gateway)
            except ApiError as e:
                if e.status == 409:
                    log.warning("event=network-kept name=%s reason=%s", net.name, e.message)
                elif e.status != 404:
                    raise _api_error(e) from None
            self.state.networks.pop(docker_id, None)
            self.state.save()
        self._locks.pop(docker_id, None)
        return {}

    # ---- endpoints -------------------------------------------------------------------------

    async def create_endpoint(self, body: rq.CreateEndpoint) -> dict[str, Any]:
        req = p.parse_create_endpoint(body)
        for attempt in (1, 2):
            net = await self.ensure_network(req.docker_network_id)
            assert net.name is not None
            try:
                endpoint = await self.api.create_endpoint(
                    net.name, netns=None, ip=req.ip, mac=req.mac, id=req.endpoint_id,
                    labels={"owner": "docker", "docker.network_id": req.docker_network_id},
                )
                break
            except ApiError as e:
                if e.status == 404 and attempt == 1:
                    # The overlaynet network vanished behind Docker's back (removed with overlayctl,
                    # state wiped): make it again from what we remember, then retry once.
                    log.warning("event=network-missing name=%s action=recreate", net.name)
                    net.ready = net.created = net.gateway_reserved = False
                    continue
                raise _api_error(e) from None
        log.info("event=endpoint-created network=%s endpoint=%s ip=%s", net.name, req.endpoint_id[:12],
                 endpoint["ip"])
        return p.create_endpoint_response(req, endpoint)

    async def join(self, body: rq.EndpointRef) -> dict[str, Any]:
        endpoint_id = body.endpoint_id
        try:
            endpoint = await self.api.get_endpoint(endpoint_id)
        except ApiError as e:
            raise _api_error(e) from None
        # The container's names are known to Docker only once it is connected: learn them in the
        # background and publish them, so every host's DNS answers for them (dns.md).
        task = asyncio.create_task(self._name_endpoint(body.network_id, endpoint_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        net = self.state.networks.get(body.network_id)
        return p.join_response(endpoint, internal=net is not None and net.internal)

    async def _name_endpoint(self, docker_network_id: str, endpoint_id: str) -> None:
        try:
            found = await self.engine.endpoint_names(docker_network_id, endpoint_id)
            names = model.usable_dns_names(found)
            if not names:
                log.info("event=endpoint-unnamed endpoint=%s found=%s", endpoint_id[:12], ",".join(found) or "-")
                return
            await self.api.set_endpoint_names(endpoint_id, names)
            log.info("event=endpoint-named endpoint=%s names=%s", endpoint_id[:12], ",".join(names))
        except ApiError as e:
            log.warning("event=endpoint-naming-failed endpoint=%s error=%s", endpoint_id[:12], e.message)
        except Exception:
            log.exception("event=endpoint-naming-crashed endpoint=%s", endpoint_id[:12])

    async def leave(self, body: rq.EndpointRef) -> dict[str, Any]:
        # Docker moves the interface back to the host under its SrcName; DeleteEndpoint removes it.
        return {}

    async def delete_endpoint(self, body: rq.EndpointRef) -> dict[str, Any]:
        endpoint_id = body.endpoint_id
        try:
            await self.api.delete_endpoint(endpoint_id)
        except ApiError as e:
            if e.status != 404:
                raise _api_error(e) from None
        log.info("event=endpoint-removed endpoint=%s", endpoint_id[:12])
        return {}

    async def endpoint_oper_info(self, body: rq.EndpointRef) -> dict[str, Any]:
        try:
            return p.oper_info(await self.api.get_endpoint(body.endpoint_id))
        except ApiError:
            return {"Value": {}}

    # ---- IPAM ------------------------------------------------------------------------------

    async def request_pool(self, body: rq.RequestPool) -> dict[str, Any]:
        req = p.parse_request_pool(body)
        if req.subnet is not None:
            return p.pool_response(req.subnet)
        if req.network is None:
            return p.pool_response(await self._pick_pool())
        try:
            existing = await self.api.get_network(req.network)
        except ApiError as e:
            raise _api_error(e) from None
        return p.pool_response(existing["subnet"])

    async def _pick_pool(self) -> str:
        """A free /24 of the default pool: free of every overlaynet network in the cluster, of this
        host's Docker networks (some not in overlayd yet), and of pools handed out a moment ago."""
        async with self._pool_lock:
            try:
                taken = [str(n["subnet"]) for n in await self.api.list_networks()]
            except ApiError as e:
                raise _api_error(e) from None
            taken += [n.subnet for n in self.state.networks.values()] + list(self._picked)
            subnet = p.pick_subnet(self.default_pool, taken)
            if subnet is None:
                raise p.PluginError(f"no free /{p.DEFAULT_POOL_PREFIXLEN} left in the default pool "
                                    f"{self.default_pool}: give --subnet, or start overlaynet-docker with "
                                    "another --default-pool")
            self._picked.add(subnet)
            log.info("event=pool-picked subnet=%s pool=%s", subnet, self.default_pool)
            return subnet

    async def release_pool(self, body: rq.ReleasePool) -> dict[str, Any]:
        self._picked.discard(p.subnet_of_pool(body.pool_id))
        return {}

    async def request_address(self, body: rq.RequestAddress) -> dict[str, Any]:
        subnet = p.subnet_of_pool(body.pool_id)
        ip = p.requested_ip(body)
        if p.is_gateway_request(body):
            # Asked while the network is being created, before its name is known: answered from the
            # subnet alone, and reserved once the overlaynet network exists (_reserve_gateway).
            return {"Address": p.gateway_address(subnet, ip), "Data": {}}
        name = await self._network_for_subnet(subnet)
        try:
            answer = await self.api.reserve_address(name, ip)
        except ApiError as e:
            raise _api_error(e) from None
        return {"Address": f"{answer['ip']}/{answer['prefixlen']}", "Data": {}}

    async def release_address(self, body: rq.RequestAddress) -> dict[str, Any]:
        subnet = p.subnet_of_pool(body.pool_id)
        ip = p.requested_ip(body)
        net = self.state.by_subnet(subnet)
        if ip is None or net is None or net.name is None or ip == net.gateway:
            # The network is gone (its deletion released everything) or it is Docker's gateway,
            # which DeleteNetwork handles.
            return {}
        try:
            await self.api.release_address(net.name, ip)
        except ApiError as e:
            if e.status != 404:
                raise _api_error(e) from None
        return {}

    async def _network_for_subnet(self, subnet: str) -> str:
        net = self.state.by_subnet(subnet)
        if net is not None:
            resolved = await self.ensure_network(net.docker_id)
            assert resolved.name is not None
            return resolved.name
        try:
            for other in await self.api.list_networks():
                if ipaddress.IPv4Network(other["subnet"]) == ipaddress.IPv4Network(subnet):
                    return str(other["name"])
        except ApiError as e:
            raise _api_error(e) from None
        raise p.PluginError(
            f"no overlaynet network has subnet {subnet}; create the Docker network with "
            "-d overlaynet --ipam-driver overlaynet first"
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
