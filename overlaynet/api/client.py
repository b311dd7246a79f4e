"""The one way front ends (overlayctl, the Docker driver, the CNI plugin) talk to overlayd.

The routes are written once (`Routes`); two transports carry them over overlayd's unix socket:
`Client` blocks (the standard library's http.client: one-shot tools such as overlayctl and the CNI
plugin start in tens of milliseconds instead of paying ~120 ms to import aiohttp), `AsyncClient`
awaits (aiohttp, for code that already runs an event loop: the Docker plugin). Failures raise
`ApiError` whose message is one line a user can act on.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from overlaynet.agent.config import DEFAULT_SOCKET

SOCKET_ENV = "OVERLAYNET_SOCKET"

R = TypeVar("R")


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


# ---- what both transports say the same way -----------------------------------------------------

def _check_socket(path: str) -> None:
    if not os.path.exists(path):
        raise DaemonUnreachable(
            f"overlayd is not running: no socket at {path} "
            f"(start it with `overlayd`, or point --socket/{SOCKET_ENV} at its socket)"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise _permission_denied(path)


def _permission_denied(path: str) -> DaemonUnreachable:
    return DaemonUnreachable(f"permission denied on {path}: the API is root-only; run as root (e.g. with sudo)")


def _not_answering(path: str) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"overlayd is not answering on {path}; is it running? "
        f"(start it with `overlayd`, or point --socket/{SOCKET_ENV} at its socket)"
    )


def _answer(status: int, raw: bytes) -> Any:
    """The decoded body of a response, or ApiError with overlayd's own message."""
    if status == 204:
        return None
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if status >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        raise ApiError(status, message or f"overlayd answered HTTP {status}")
    return data


# ---- the routes ----------------------------------------------------------------------------------

class Routes(Generic[R]):
    """overlayd's REST API, one method per route; a transport implements `_call`."""

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> R:
        raise NotImplementedError

    def status(self) -> R:
        return self._call("GET", "/v1/status")

    def list_networks(self) -> R:
        return self._call("GET", "/v1/networks")

    def create_network(self, name: str, subnet: str, vni: int | None = None, mtu: int | None = None,
                       gateway: str | None = None, options: dict[str, Any] | None = None) -> R:
        body: dict[str, Any] = {"name": name, "subnet": subnet}
        for key, value in (("vni", vni), ("mtu", mtu), ("gateway", gateway), ("options", options)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/v1/networks", body)

    def get_network(self, name: str) -> R:
        return self._call("GET", f"/v1/networks/{quote(name, safe='')}")

    def delete_network(self, name: str, force: bool = False) -> R:
        return self._call("DELETE", f"/v1/networks/{quote(name, safe='')}",
                          params={"force": "true"} if force else None)

    def list_endpoints(self, network: str | None = None, everywhere: bool = False) -> R:
        params = {"network": network} if network else {}
        if everywhere:
            params["all"] = "true"
        return self._call("GET", "/v1/endpoints", params=params or None)

    def create_endpoint(self, network: str, netns: str | None = None, ifname: str | None = None,
                        ip: str | None = None, mac: str | None = None,
                        id: str | None = None, labels: dict[str, str] | None = None,
                        names: list[str] | None = None) -> R:
        body: dict[str, Any] = {"network": network, "netns": netns}
        for key, value in (("ifname", ifname), ("ip", ip), ("mac", mac), ("id", id), ("labels", labels),
                           ("names", names)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/v1/endpoints", body)

    def get_endpoint(self, endpoint_id: str, check: bool = False) -> R:
        """With check=True the answer says whether the endpoint's veth is really there ("present")."""
        return self._call("GET", f"/v1/endpoints/{quote(endpoint_id, safe='')}",
                          params={"check": "true"} if check else None)

    def set_endpoint_names(self, endpoint_id: str, names: list[str]) -> R:
        """Replace an endpoint's DNS names (answered by every host's DNS on the network)."""
        return self._call("PATCH", f"/v1/endpoints/{quote(endpoint_id, safe='')}", {"names": names})

    def delete_endpoint(self, endpoint_id: str) -> R:
        return self._call("DELETE", f"/v1/endpoints/{quote(endpoint_id, safe='')}")

    def detach(self, network: str, netns: str) -> R:
        return self._call("DELETE", "/v1/endpoints", params={"network": network, "netns": netns})

    def reserve_address(self, network: str, ip: str | None = None) -> R:
        return self._call("POST", f"/v1/networks/{quote(network, safe='')}/addresses", {"ip": ip} if ip else {})

    def release_address(self, network: str, ip: str) -> R:
        return self._call("DELETE", f"/v1/networks/{quote(network, safe='')}/addresses/{quote(ip, safe='')}")

    def members(self) -> R:
        return self._call("GET", "/v1/members")

    def fdb(self, network: str) -> R:
        return self._call("GET", f"/v1/networks/{quote(network, safe='')}/fdb")

    def keys(self) -> R:
        return self._call("GET", "/v1/keys")

    def key_op(self, op: str, key: str) -> R:
        return self._call("POST", f"/v1/keys/{op}", {"key": key})

    def reconcile(self) -> R:
        return self._call("POST", "/v1/reconcile")

    def get(self, path: str, params: dict[str, str] | None = None) -> R:
        return self._call("GET", path, params=params)


# ---- blocking transport: http.client over the unix socket ---------------------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("overlayd", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client(Routes[Any]):
    """Blocking client: one connection per call (overlayd's API is local and cheap to reach)."""

    def __init__(self, socket_path: str | None = None, timeout: float = 60.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> Any:
        return self.request(method, path, body, params)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> Any:
        _check_socket(self.socket_path)
        target = path + ("?" + urlencode(params) if params else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, target, body=payload, headers=headers)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except PermissionError:
            raise _permission_denied(self.socket_path) from None
        except (ConnectionRefusedError, FileNotFoundError):
            raise _not_answering(self.socket_path) from None
        except TimeoutError:
            raise DaemonUnreachable(f"overlayd did not answer on {self.socket_path} in time") from None
        except (OSError, http.client.HTTPException) as e:
            raise DaemonUnreachable(f"talking to overlayd on {self.socket_path} failed: {e}") from None
        finally:
            conn.close()
        return _answer(status, raw)


# ---- awaiting transport: aiohttp ------------------------------------------------------------------

class AsyncClient(Routes[Coroutine[Any, Any, Any]]):
    """For code that runs an event loop; every route returns a coroutine."""

    def __init__(self, socket_path: str | None = None, timeout: float = 60.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> Coroutine[Any, Any, Any]:
        return self.request(method, path, body, params)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, str] | None = None) -> Any:
        import aiohttp  # here, not at the top: the blocking Client never needs it

        _check_socket(self.socket_path)
        connector = aiohttp.UnixConnector(path=self.socket_path)
        try:
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.request(method, "http://overlayd" + path, json=body, params=params) as resp:
                    return _answer(resp.status, await resp.read())
        except PermissionError:
            raise _permission_denied(self.socket_path) from None
        except (aiohttp.ClientConnectorError, ConnectionRefusedError, FileNotFoundError) as e:
            if isinstance(getattr(e, "os_error", None), PermissionError):
                raise _permission_denied(self.socket_path) from None
            raise _not_answering(self.socket_path) from None
        except TimeoutError:
            raise DaemonUnreachable(f"overlayd did not answer on {self.socket_path} in time") from None
        except aiohttp.ClientError as e:
            raise DaemonUnreachable(f"talking to overlayd on {self.socket_path} failed: {e}") from None
