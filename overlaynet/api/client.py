"""The one way front ends (overlayctl, the Docker driver, the CNI plugin) talk to overlayd.

`AsyncClient` for code that already runs an event loop; `Client` wraps it for one-shot tools.
Failures raise `ApiError` whose message is one line a user can act on.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import quote

import aiohttp

from overlaynet.agent.config import DEFAULT_SOCKET

SOCKET_ENV = "OVERLAYNET_SOCKET"


def default_socket() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # HTTP status, or 0 when overlayd could not be reached
        self.message = message


class DaemonUnreachable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class AsyncClient:
    def __init__(self, socket_path: str | None = None, timeout: float = 60.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, str] | None = None) -> Any:
        self._check_socket()
        connector = aiohttp.UnixConnector(path=self.socket_path)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
                async with session.request(method, "http://overlayd" + path, json=body, params=params) as resp:
                    if resp.status == 204:
                        return None
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    if resp.status >= 400:
                        message = data.get("error") if isinstance(data, dict) else None
                        raise ApiError(resp.status, message or f"overlayd answered HTTP {resp.status}")
                    return data
        except PermissionError:
            raise DaemonUnreachable(
                f"permission denied on {self.socket_path}: the API is root-only; run as root (e.g. with sudo)"
            ) from None
        except (aiohttp.ClientConnectorError, ConnectionRefusedError, FileNotFoundError) as e:
            if isinstance(getattr(e, "os_error", None), PermissionError):
                raise DaemonUnreachable(
                    f"permission denied on {self.socket_path}: the API is root-only; run as root"
                ) from None
            raise DaemonUnreachable(
                f"overlayd is not answering on {self.socket_path}; is it running? "
                f"(start it with `overlayd`, or point --socket/{SOCKET_ENV} at its socket)"
            ) from None
        except TimeoutError:
            raise DaemonUnreachable(f"overlayd did not answer on {self.socket_path} in time") from None
        except aiohttp.ClientError as e:
            raise DaemonUnreachable(f"talking to overlayd on {self.socket_path} failed: {e}") from None

    def _check_socket(self) -> None:
        if not os.path.exists(self.socket_path):
            raise DaemonUnreachable(
                f"overlayd is not running: no socket at {self.socket_path} "
                f"(start it with `overlayd`, or point --socket/{SOCKET_ENV} at its socket)"
            )
        if not os.access(self.socket_path, os.R_OK | os.W_OK):
            raise DaemonUnreachable(
                f"permission denied on {self.socket_path}: the API is root-only; run as root (e.g. with sudo)"
            )

    # ---- routes ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/status")

    async def list_networks(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/v1/networks")

    async def create_network(self, name: str, subnet: str, vni: int | None = None, mtu: int | None = None,
                             gateway: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "subnet": subnet}
        for key, value in (("vni", vni), ("mtu", mtu), ("gateway", gateway), ("options", options)):
            if value is not None:
                body[key] = value
        return await self.request("POST", "/v1/networks", body)

    async def get_network(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/networks/{quote(name, safe='')}")

    async def delete_network(self, name: str, force: bool = False) -> None:
        await self.request("DELETE", f"/v1/networks/{quote(name, safe='')}",
                           params={"force": "true"} if force else None)

    async def list_endpoints(self, network: str | None = None, everywhere: bool = False) -> list[dict[str, Any]]:
        params = {"network": network} if network else {}
        if everywhere:
            params["all"] = "true"
        return await self.request("GET", "/v1/endpoints", params=params or None)

    async def create_endpoint(self, network: str, netns: str | None = None, ifname: str | None = None,
                              ip: str | None = None, mac: str | None = None,
                              id: str | None = None, labels: dict[str, str] | None = None,
                              names: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"network": network, "netns": netns}
        for key, value in (("ifname", ifname), ("ip", ip), ("mac", mac), ("id", id), ("labels", labels),
                           ("names", names)):
            if value is not None:
                body[key] = value
        return await self.request("POST", "/v1/endpoints", body)

    async def get_endpoint(self, endpoint_id: str, check: bool = False) -> dict[str, Any]:
        """With check=True the answer says whether the endpoint's veth is really there ("present")."""
        return await self.request("GET", f"/v1/endpoints/{quote(endpoint_id, safe='')}",
                                  params={"check": "true"} if check else None)

    async def set_endpoint_names(self, endpoint_id: str, names: list[str]) -> dict[str, Any]:
        """Replace an endpoint's DNS names (answered by every host's DNS on the network)."""
        return await self.request("PATCH", f"/v1/endpoints/{quote(endpoint_id, safe='')}", {"names": names})

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.request("DELETE", f"/v1/endpoints/{quote(endpoint_id, safe='')}")

    async def detach(self, network: str, netns: str) -> dict[str, Any]:
        return await self.request("DELETE", "/v1/endpoints", params={"network": network, "netns": netns})

    async def reserve_address(self, network: str, ip: str | None = None) -> dict[str, Any]:
        return await self.request("POST", f"/v1/networks/{quote(network, safe='')}/addresses",
                                  {"ip": ip} if ip else {})

    async def release_address(self, network: str, ip: str) -> None:
        await self.request("DELETE", f"/v1/networks/{quote(network, safe='')}/addresses/{quote(ip, safe='')}")

    async def members(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/v1/members")

    async def fdb(self, network: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/networks/{quote(network, safe='')}/fdb")

    async def keys(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/keys")

    async def key_op(self, op: str, key: str) -> dict[str, Any]:
        return await self.request("POST", f"/v1/keys/{op}", {"key": key})

    async def reconcile(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/reconcile")

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)


class Client:
    """Blocking wrapper: each call runs the async one on a private event loop."""

    def __init__(self, socket_path: str | None = None, timeout: float = 60.0) -> None:
        self._async = AsyncClient(socket_path, timeout)
        self.socket_path = self._async.socket_path

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._async, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(method(*args, **kwargs))

        return call
