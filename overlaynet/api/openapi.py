"""The OpenAPI 3.1 document served at /openapi.json, generated from the route table (api/routes.py).

Schemas come from msgspec's JSON Schema of the very types the server decodes requests into
(overlaynet/requests.py) and of the answer shapes (api/answers.py); nothing here is written by hand
per route, so a new route is documented by adding it to the table.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from overlaynet import __version__
from overlaynet.api import answers
from overlaynet.api.routes import ROUTES, Route

REF = "#/components/schemas/{name}"


def _parameters(route: Route, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in route.path_params:
        schema: dict[str, Any] = {"type": "string"}
        if name in route.path_values:
            schema["enum"] = list(route.path_values[name])
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        # The query's Struct is documented field by field, as OpenAPI wants query parameters.
        query = components.pop(route.query)
        required = set(query.get("required", []))
        for name, schema in query["properties"].items():
            param = {"name": name, "in": "query", "required": name in required,
                     "schema": {k: v for k, v in schema.items() if k != "description"}}
            if "description" in schema:
                param["description"] = schema["description"]
            params.append(param)
    return params


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


@cache
def openapi_document() -> dict[str, Any]:
    types: list[Any] = [answers.Error]
    for route in ROUTES:
        types += [t for t in (route.answer_type, route.body_type, route.query_type) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, schemas, strict=True))
    error = by_type[answers.Error]
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        ok: dict[str, Any] = {"description": "success"}
        if route.answer is not None:
            ok.update(_json(by_type[route.answer_type]))
        op: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "responses": {str(route.ok): ok, **{str(s): {"description": "error", **_json(error)}
                                                for s in route.errors}},
        }
        params = _parameters(route, components)
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, **_json(by_type[route.body_type])}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "overlayd API", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
