"""The one way front ends (overlayctl, the Docker driver, the CNI plugin) talk to overlayd.

The routes are written once (api/routes.py; `Routes` has a method per route); two transports carry them over overlayd's unix socket:
`Client` blocks (the standard library's http.client: one-shot tools such as overlayctl and the CNI
plugin start in tens of milliseconds instead of paying ~120 ms to import aiohttp), `AsyncClient`
awaits (aiohttp, for code that already runs an event loop: the Docker plugin). Failures raise
`ApiError` whose message is one line a user can act on.

Bodies and queries are plain JSON values named as in overlaynet/requests.py, not its Structs: this
module imports neither msgspec nor the typed requests and answers, which were a third of
`overlayctl`'s start-up (docs/performance.md). The server decodes each into its Struct all the same
(unknown keys are refused), and tests/unit/test_api_routes.py decodes what every method sends.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from overlaynet.api.routes import BY_NAME
from overlaynet.paths import DEFAULT_SOCKET

SOCKET_ENV = "OVERLAYNET_SOCKET"
_JSON = {"Content-Type": "application/json"}

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

def _chosen(**fields: Any) -> dict[str, Any]:
    """What the caller chose: every field of a request left at its default (None or False in every
    type of overlaynet/requests.py) is left out, so a body or query says only that."""
    return {k: v for k, v in fields.items() if v is not None and v is not False}


def _query_text(query: dict[str, Any] | None) -> dict[str, str] | None:
    """Query-string values (booleans as true)."""
    if not query:
        return None
    return {k: "true" if v is True else str(v) for k, v in query.items()}


class Routes(Generic[R]):
    """overlayd's REST API, one method per route of api/routes.py (same names); a transport
    implements `_send`."""

    def _send(self, method: str, path: str, body: bytes | None, params: dict[str, str] | None) -> R:
        raise NotImplementedError

    def _call(self, route_name: str, body: dict[str, Any] | None = None, /,
              query: dict[str, Any] | None = None, **path: str) -> R:
        route = BY_NAME[route_name]
        return self._send(route.method, route.url(**path),
                          json.dumps(body).encode() if body is not None else None, _query_text(query))

    def openapi(self) -> R:
        return self._call("openapi")

    def status(self) -> R:
        return self._call("status")

    def health(self) -> R:
        return self._call("health")

    def stats(self) -> R:
        return self._call("stats")

    def list_networks(self) -> R:
        return self._call("list_networks")

    def create_network(self, name: str, subnet: str, vni: int | None = None, mtu: int | None = None,
                       gateway: str | None = None, options: dict[str, Any] | None = None,
                       egress: bool = False, encrypted: bool = False) -> R:
        return self._call("create_network", _chosen(name=name, subnet=subnet, vni=vni, mtu=mtu, gateway=gateway,
                                                    options=options, egress=egress, encrypted=encrypted))

    def get_network(self, name: str) -> R:
        return self._call("get_network", name=name)

    def delete_network(self, name: str, force: bool = False) -> R:
        return self._call("delete_network", query=_chosen(force=force), name=name)

    def network_fdb(self, network: str) -> R:
        return self._call("network_fdb", name=network)

    def reserve_address(self, network: str, ip: str | None = None) -> R:
        return self._call("reserve_address", _chosen(ip=ip), name=network)

    def release_address(self, network: str, ip: str) -> R:
        return self._call("release_address", name=network, ip=ip)

    def list_endpoints(self, network: str | None = None, everywhere: bool = False) -> R:
        return self._call("list_endpoints", query=_chosen(network=network, all=everywhere))

    def create_endpoint(self, network: str, netns: str | None = None, ifname: str | None = None,
                        ip: str | None = None, mac: str | None = None,
                        id: str | None = None, labels: dict[str, str] | None = None,
                        names: list[str] | None = None) -> R:
        return self._call("create_endpoint", _chosen(
            network=network, netns=netns, ifname=ifname, ip=ip, mac=mac, id=id, labels=labels, names=names))

    def detach(self, network: str, netns: str) -> R:
        return self._call("detach", query=_chosen(network=network, netns=netns))

    def get_endpoint(self, endpoint_id: str, check: bool = False) -> R:
        """With check=True the answer says whether the endpoint's veth is really there ("present")."""
        return self._call("get_endpoint", query=_chosen(check=check), id=endpoint_id)

    def set_endpoint_names(self, endpoint_id: str, names: list[str]) -> R:
        """Replace an endpoint's DNS names (answered by every host's DNS on the network)."""
        return self._call("set_endpoint_names", _chosen(names=names), id=endpoint_id)

    def delete_endpoint(self, endpoint_id: str) -> R:
        return self._call("delete_endpoint", id=endpoint_id)

    def network_keys(self, name: str) -> R:
        return self._call("network_keys", name=name)

    def rotate_key(self, name: str) -> R:
        return self._call("rotate_key", name=name)

    def members(self) -> R:
        return self._call("members")

    def keys(self) -> R:
        return self._call("keys")

    def key_op(self, op: str, key: str) -> R:
        return self._call("key_op", _chosen(key=key), op=op)

    def doctor(self) -> R:
        return self._call("doctor")

    def reconcile(self) -> R:
        return self._call("reconcile")


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

    def _send(self, method: str, path: str, body: bytes | None, params: dict[str, str] | None) -> Any:
        _check_socket(self.socket_path)
        target = path + ("?" + urlencode(params) if params else "")
        payload = body
        headers = _JSON if payload is not None else {}
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

    def _send(self, method: str, path: str, body: bytes | None,
              params: dict[str, str] | None) -> Coroutine[Any, Any, Any]:
        return self._request(method, path, body, params)

    async def _request(self, method: str, path: str, body: bytes | None, params: dict[str, str] | None) -> Any:
        import aiohttp  # here, not at the top: the blocking Client never needs it

        _check_socket(self.socket_path)
        connector = aiohttp.UnixConnector(path=self.socket_path)
        try:
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.request(method, "http://overlayd" + path, data=body, params=params,
                                           headers=_JSON if body is not None else None) as resp:
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
