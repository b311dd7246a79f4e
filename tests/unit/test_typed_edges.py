"""No domain method takes a raw request dict: every request is decoded into a typed value at the API
edge (overlaynet/requests.py), and what the agent's parts accept says so in its signature, so a
handler that passed a dict on would be a type error (mypy) and a failure here."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

from overlaynet import requests as rq
from overlaynet.agent.agent import Agent
from overlaynet.agent.endpoints import Endpoints
from overlaynet.agent.networks import Networks
from overlaynet.agent.programmer import Programmer
from overlaynet.agent.reconciler import Reconciler
from overlaynet.api.routes import ROUTES
from overlaynet.api.server import HANDLERS

pytestmark = pytest.mark.unit

DOMAIN = (Agent, Networks, Endpoints, Programmer, Reconciler)


def untyped(hint: Any) -> bool:
    """A parameter that could carry a raw request: Any, or a dict/mapping of Any."""
    if hint is Any:
        return True
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (dict, typing.Mapping, typing.MutableMapping) or hint is dict:
        return not args or Any in args
    return any(untyped(a) for a in args)


def test_no_public_domain_method_takes_a_raw_dict_or_any() -> None:
    loose = []
    for cls in DOMAIN:
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            hints = typing.get_type_hints(fn)
            loose += [f"{cls.__name__}.{name}({p})" for p in params if p not in hints or untyped(hints[p])]
    assert loose == []


def test_every_body_and_query_the_api_accepts_is_a_typed_request() -> None:
    for route in ROUTES:
        for kind in (route.body_type, route.query_type):
            assert kind is None or (issubclass(kind, rq.Request) and kind.__struct_config__.forbid_unknown_fields), route


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_each_handler_is_typed_with_what_its_route_decodes(route) -> None:
    """The server decodes what the route says; the handler's `Call[Body, Query]` says what mypy
    checks it against. They must be the same types, or mypy would check the wrong thing."""
    hint = typing.get_type_hints(HANDLERS[route.name])["call"]
    assert typing.get_args(hint) == (route.body_type or type(None), route.query_type or type(None))
