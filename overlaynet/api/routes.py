"""overlayd's REST API, route by route: the one table the server, the client and the OpenAPI document read.

Each route names its method and path, the typed body and query it accepts (overlaynet/requests.py),
the shape of its answer (api/answers.py), by class name, its success status and its error statuses. The server
binds a handler of the same name to each route (api/server.py), the client has a method of the same
name (api/client.py), and the document is generated from the table (api/openapi.py); a test checks
that the three agree.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, NamedTuple
from urllib.parse import quote

KEY_OPS = ("install", "use", "remove")


def _type_named(module: str, name: str) -> Any:
    """A class of overlaynet/requests.py or api/answers.py by name; "list[X]" is a list of X."""
    types = importlib.import_module(module)
    if name.startswith("list[") and name.endswith("]"):
        return list[getattr(types, name[5:-1])]  # type: ignore[misc]
    return getattr(types, name)


class Route(NamedTuple):
    """Types are named, not imported: the blocking client (overlayctl, the CNI plugin: one request
    per process) reads this table for method and path, and importing msgspec and the typed request
    and answer modules (or dataclasses) would be a third of its start-up. The server and the
    document resolve them (`answer_type`, `body_type`, `query_type`)."""

    name: str  # the operation id; the server's handler and the client's method carry this name
    method: str
    path: str  # aiohttp's template: "/v1/networks/{name}"
    summary: str
    answer: str | None = None  # the success body's type in api/answers.py; None: no body
    ok: int = 200
    errors: tuple[int, ...] = ()
    body: str | None = None  # a Request class of overlaynet/requests.py
    query: str | None = None  # likewise
    path_values: dict[str, tuple[str, ...]] = {}  # path params with a closed set (never changed)
    root_only: bool = False  # answered only to a caller whose uid is 0 (SO_PEERCRED), else 403

    @property
    def answer_type(self) -> Any:
        return None if self.answer is None else _type_named("overlaynet.api.answers", self.answer)

    @property
    def body_type(self) -> Any:
        return None if self.body is None else _type_named("overlaynet.requests", self.body)

    @property
    def query_type(self) -> Any:
        return None if self.query is None else _type_named("overlaynet.requests", self.query)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def url(self, **params: str) -> str:
        """The path with its parameters filled in (each quoted: a name may hold any character)."""
        return self.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})


ROUTES: tuple[Route, ...] = (
    Route("openapi", "GET", "/openapi.json", "This document", "Object"),
    Route("status", "GET", "/v1/status", "This host's daemon status", "Object"),
    Route("health", "GET", "/v1/health", "ok, or degraded with the reasons", "Health"),
    Route("stats", "GET", "/v1/stats", "Dataplane counters (userspace: per network, drops by reason)", "Object"),
    Route("list_networks", "GET", "/v1/networks", "List networks", "list[Network]"),
    Route("create_network", "POST", "/v1/networks", "Create a network", "Network", 201, (400, 409),
          body="NetworkCreate"),
    Route("get_network", "GET", "/v1/networks/{name}", "Inspect a network", "Network", errors=(404,)),
    Route("delete_network", "DELETE", "/v1/networks/{name}", "Remove a network", None, 204, (400, 404, 409),
          query="NetworkDeleteQuery"),
    Route("network_keys", "GET", "/v1/networks/{name}/keys",
          "An encrypted network's SAs on this host, with key material (root only; for decrypting captures)",
          "NetworkKeys", errors=(400, 403, 404), root_only=True),
    Route("rotate_key", "POST", "/v1/networks/{name}/rotate-key",
          "A new key epoch for an encrypted network, now", "Network", errors=(400, 404)),
    Route("network_fdb", "GET", "/v1/networks/{name}/fdb",
          "What this host programmed for a network, and what it wants", "NetworkFdb", errors=(404,)),
    Route("reserve_address", "POST", "/v1/networks/{name}/addresses", "Reserve an address (Docker IPAM)",
          "Address", 201, (400, 404, 409, 507), body="AddressReserve"),
    Route("release_address", "DELETE", "/v1/networks/{name}/addresses/{ip}",
          "Release a reserved address (idempotent)", None, 204, (404,)),
    Route("list_endpoints", "GET", "/v1/endpoints",
          "List endpoints on this host (with ?all=true: every host's, as replicated)",
          "list[Endpoint]", errors=(400, 404), query="EndpointListQuery"),
    Route("create_endpoint", "POST", "/v1/endpoints", "Attach: create an endpoint", "Endpoint", 201,
          (400, 404, 409, 507), body="EndpointCreate"),
    Route("detach", "DELETE", "/v1/endpoints", "Detach by network and namespace", "Endpoint",
          errors=(400, 404), query="DetachQuery"),
    Route("get_endpoint", "GET", "/v1/endpoints/{id}", "Inspect an endpoint (id or unique prefix)", "Endpoint",
          errors=(400, 404), query="EndpointGetQuery"),
    Route("set_endpoint_names", "PATCH", "/v1/endpoints/{id}", "Set an endpoint's DNS names", "Endpoint",
          errors=(400, 404, 507), body="EndpointUpdate"),
    Route("delete_endpoint", "DELETE", "/v1/endpoints/{id}", "Detach an endpoint", None, 204, (404,)),
    Route("members", "GET", "/v1/members", "Cluster members as this host sees them", "list[Member]"),
    Route("keys", "GET", "/v1/keys", "The gossip keyring (key ids only)", "Keys"),
    Route("key_op", "POST", "/v1/keys/{op}", "Change the keyring here and on every member", "KeyChanged",
          errors=(400,), body="KeyChange", path_values={"op": KEY_OPS}),
    Route("doctor", "GET", "/v1/doctor", "Check the underlay to every peer: gossip and VXLAN ports, path MTU",
          "Doctor"),
    Route("reconcile", "POST", "/v1/reconcile", "Run a reconciliation now", "Reconcile"),
)

BY_NAME: dict[str, Route] = {route.name: route for route in ROUTES}
