"""overlayd's REST API, route by route: the one table the server, the client and the OpenAPI document read.

Each route names its method and path, the typed body and query it accepts (overlaynet/requests.py),
the shape of its answer (api/answers.py), its success status and its error statuses. The server
binds a handler of the same name to each route (api/server.py), the client has a method of the same
name (api/client.py), and the document is generated from the table (api/openapi.py); a test checks
that the three agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from overlaynet import requests as rq
from overlaynet.api import answers as an

KEY_OPS = ("install", "use", "remove")


@dataclass(frozen=True)
class Route:
    name: str  # the operation id; the server's handler and the client's method carry this name
    method: str
    path: str  # aiohttp's template: "/v1/networks/{name}"
    summary: str
    answer: Any = None  # the success body's type; None: no body
    ok: int = 200
    errors: tuple[int, ...] = ()
    body: type[rq.Request] | None = None
    query: type[rq.Request] | None = None
    path_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # path params with a closed set
    root_only: bool = False  # answered only to a caller whose uid is 0 (SO_PEERCRED), else 403

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def url(self, **params: str) -> str:
        """The path with its parameters filled in (each quoted: a name may hold any character)."""
        return self.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})


ROUTES: tuple[Route, ...] = (
    Route("openapi", "GET", "/openapi.json", "This document", an.Object),
    Route("status", "GET", "/v1/status", "This host's daemon status", an.Object),
    Route("health", "GET", "/v1/health", "ok, or degraded with the reasons", an.Health),
    Route("stats", "GET", "/v1/stats", "Dataplane counters (userspace: per network, drops by reason)", an.Object),
    Route("list_networks", "GET", "/v1/networks", "List networks", list[an.Network]),
    Route("create_network", "POST", "/v1/networks", "Create a network", an.Network, 201, (400, 409),
          body=rq.NetworkCreate),
    Route("get_network", "GET", "/v1/networks/{name}", "Inspect a network", an.Network, errors=(404,)),
    Route("delete_network", "DELETE", "/v1/networks/{name}", "Remove a network", None, 204, (400, 404, 409),
          query=rq.NetworkDeleteQuery),
    Route("network_keys", "GET", "/v1/networks/{name}/keys",
          "An encrypted network's SAs on this host, with key material (root only; for decrypting captures)",
          an.NetworkKeys, errors=(400, 403, 404), root_only=True),
    Route("rotate_key", "POST", "/v1/networks/{name}/rotate-key",
          "A new key epoch for an encrypted network, now", an.Network, errors=(400, 404)),
    Route("network_fdb", "GET", "/v1/networks/{name}/fdb",
          "What this host programmed for a network, and what it wants", an.NetworkFdb, errors=(404,)),
    Route("reserve_address", "POST", "/v1/networks/{name}/addresses", "Reserve an address (Docker IPAM)",
          an.Address, 201, (400, 404, 409, 507), body=rq.AddressReserve),
    Route("release_address", "DELETE", "/v1/networks/{name}/addresses/{ip}",
          "Release a reserved address (idempotent)", None, 204, (404,)),
    Route("list_endpoints", "GET", "/v1/endpoints",
          "List endpoints on this host (with ?all=true: every host's, as replicated)",
          list[an.Endpoint], errors=(400, 404), query=rq.EndpointListQuery),
    Route("create_endpoint", "POST", "/v1/endpoints", "Attach: create an endpoint", an.Endpoint, 201,
          (400, 404, 409, 507), body=rq.EndpointCreate),
    Route("detach", "DELETE", "/v1/endpoints", "Detach by network and namespace", an.Endpoint,
          errors=(400, 404), query=rq.DetachQuery),
    Route("get_endpoint", "GET", "/v1/endpoints/{id}", "Inspect an endpoint (id or unique prefix)", an.Endpoint,
          errors=(400, 404), query=rq.EndpointGetQuery),
    Route("set_endpoint_names", "PATCH", "/v1/endpoints/{id}", "Set an endpoint's DNS names", an.Endpoint,
          errors=(400, 404, 507), body=rq.EndpointUpdate),
    Route("delete_endpoint", "DELETE", "/v1/endpoints/{id}", "Detach an endpoint", None, 204, (404,)),
    Route("members", "GET", "/v1/members", "Cluster members as this host sees them", list[an.Member]),
    Route("keys", "GET", "/v1/keys", "The gossip keyring (key ids only)", an.Keys),
    Route("key_op", "POST", "/v1/keys/{op}", "Change the keyring here and on every member", an.KeyChanged,
          errors=(400,), body=rq.KeyChange, path_values={"op": KEY_OPS}),
    Route("doctor", "GET", "/v1/doctor", "Check the underlay to every peer: gossip and VXLAN ports, path MTU",
          an.Doctor),
    Route("reconcile", "POST", "/v1/reconcile", "Run a reconciliation now", an.Reconcile),
)

BY_NAME: dict[str, Route] = {route.name: route for route in ROUTES}
