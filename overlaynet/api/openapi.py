"""The OpenAPI 3.1 document served at /openapi.json (kept next to the routes it describes)."""

from __future__ import annotations

from typing import Any

from overlaynet import __version__

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answers(ok_status: str, ok_schema: dict[str, Any] | None, *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {ok_status: {"description": "success", **(_json(ok_schema) if ok_schema else {})}}
    for status in errors:
        out[status] = {"description": "error", **_json(ERROR)}
    return out


def _op(summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
            "description": description}


NETWORK = {"$ref": "#/components/schemas/Network"}
ENDPOINT = {"$ref": "#/components/schemas/Endpoint"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Network": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "vni": {"type": "integer", "minimum": 1, "maximum": 16777215},
            "subnet": {"type": "string"}, "mtu": {"type": "integer"}, "gateway": {"type": ["string", "null"]},
            "options": {"type": "object"}, "created_at": {"type": "number"}, "owner": {"type": "string"},
            "endpoints": {"type": "integer"},
        },
    },
    "NetworkCreate": {
        "type": "object", "required": ["name", "subnet"],
        "properties": {
            "name": {"type": "string"}, "subnet": {"type": "string"}, "vni": {"type": "integer"},
            "mtu": {"type": "integer"}, "options": {"type": "object"},
            "gateway": {"type": "string", "description": "an address of the subnet, or \"auto\": the first "
                        "usable one; the anycast gateway and DNS address on every host (omit: none)"},
        },
    },
    "Endpoint": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "network": {"type": "string"}, "ip": {"type": "string"},
            "prefixlen": {"type": "integer"}, "mac": {"type": "string"}, "ifname": {"type": "string"},
            "netns": {"type": ["string", "null"]}, "mtu": {"type": "integer"}, "host": {"type": "string"},
            "vtep": {"type": "string"}, "host_ifname": {"type": "string"},
            "container_ifname": {"type": "string"}, "gateway": {"type": ["string", "null"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "names": {"type": "array", "items": {"type": "string"},
                      "description": "DNS names, answered by every host's DNS on the network's gateway"},
        },
    },
    "EndpointCreate": {
        "type": "object", "required": ["network"],
        "properties": {
            "network": {"type": "string"}, "netns": {"type": ["string", "null"]}, "ifname": {"type": "string"},
            "ip": {"type": "string"}, "mac": {"type": "string"}, "id": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "names": {"type": "array", "items": {"type": "string"}},
        },
    },
    "EndpointUpdate": {
        "type": "object", "required": ["names"],
        "properties": {"names": {"type": "array", "items": {"type": "string"},
                                 "description": "replaces the endpoint's DNS names"}},
    },
    "Address": {"type": "object", "properties": {"ip": {"type": "string"}, "prefixlen": {"type": "integer"}}},
}


def openapi_document() -> dict[str, Any]:
    name = _path_param("name")
    return {
        "openapi": "3.1.0",
        "info": {"title": "overlayd API", "version": __version__},
        "paths": {
            "/v1/status": {"get": _op("This host's daemon status", _answers("200", {"type": "object"}))},
            "/v1/networks": {
                "get": _op("List networks", _answers("200", {"type": "array", "items": NETWORK})),
                "post": _op("Create a network", _answers("201", NETWORK, "400", "409"),
                            body={"$ref": "#/components/schemas/NetworkCreate"}),
            },
            "/v1/networks/{name}": {
                "get": _op("Inspect a network", _answers("200", NETWORK, "404"), params=[name]),
                "delete": _op("Remove a network", _answers("204", None, "404", "409"),
                              params=[name, _query_param("force", "true: detach endpoints first")]),
            },
            "/v1/networks/{name}/addresses": {
                "post": _op("Reserve an address (Docker IPAM)",
                            _answers("201", {"$ref": "#/components/schemas/Address"}, "400", "404", "409"),
                            body={"type": "object", "properties": {"ip": {"type": "string"}}}, params=[name]),
            },
            "/v1/networks/{name}/addresses/{ip}": {
                "delete": _op("Release a reserved address", _answers("204", None, "404"),
                              params=[name, _path_param("ip")]),
            },
            "/v1/endpoints": {
                "get": _op("List endpoints on this host", _answers("200", {"type": "array", "items": ENDPOINT}, "404"),
                           params=[_query_param("network", "only this network")]),
                "post": _op("Attach: create an endpoint", _answers("201", ENDPOINT, "400", "404", "409"),
                            body={"$ref": "#/components/schemas/EndpointCreate"}),
                "delete": _op("Detach by network and namespace", _answers("200", ENDPOINT, "400", "404"),
                              params=[_query_param("network", "network name"),
                                      _query_param("netns", "namespace name or path")]),
            },
            "/v1/endpoints/{id}": {
                "get": _op("Inspect an endpoint", _answers("200", ENDPOINT, "404"), params=[_path_param("id")]),
                "patch": _op("Set an endpoint's DNS names", _answers("200", ENDPOINT, "400", "404"),
                             body={"$ref": "#/components/schemas/EndpointUpdate"}, params=[_path_param("id")]),
                "delete": _op("Detach an endpoint", _answers("204", None, "404"), params=[_path_param("id")]),
            },
            "/v1/reconcile": {"post": _op("Run a reconciliation now", _answers("200", {"type": "object"}))},
        },
        "components": {"schemas": SCHEMAS},
    }
