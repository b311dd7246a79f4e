"""Imports point downwards: agent/ never reaches up into api/ or the daemon, dns/ never up into agent/,
the pure cores do no I/O, and inside agent/ the parts of the split Agent import one way only
(docs/architecture.md). No class grows past MAX_METHODS (docs/contributing.md)."""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "overlaynet"

# Each part may import only the parts listed before it.
PART_ORDER = ["host", "programmer", "endpoints", "networks", "reconciler", "agent"]


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every overlaynet module a file imports (`from overlaynet.x import y` counts x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("overlaynet")}


def upward_imports(package: pathlib.Path) -> list[str]:
    return sorted(f"{path.relative_to(package)} imports {name}"
                  for path in (package / "agent").glob("*.py")
                  for name in imported_modules(path)
                  if name.startswith(("overlaynet.api", "overlaynet.daemon")))


def test_agent_never_imports_the_api_or_the_daemon() -> None:
    assert upward_imports(PACKAGE) == []


def test_the_parts_of_the_agent_import_one_way() -> None:
    backwards = []
    for i, part in enumerate(PART_ORDER):
        later = {f"overlaynet.agent.{p}" for p in PART_ORDER[i + 1:]}
        backwards += [f"{part}.py imports {name}"
                      for name in imported_modules(PACKAGE / "agent" / f"{part}.py") if name in later]
    assert backwards == []


# Modules that do I/O: a sans-IO core imports none of them, so the simulator and the fuzz and unit
# tests run it with bytes alone.
IO_MODULES = {"asyncio", "socket", "selectors", "threading", "subprocess", "overlaynet.kernel"}
SANS_IO = ["dns/answer.py", "gossip/core.py", "gossip/replica.py", "gossip/membership.py", "gossip/probe.py"]
MAX_METHODS = 30


def all_imports(path: pathlib.Path) -> set[str]:
    """Every top-level module name a file imports, and every overlaynet module (as imported_modules)."""
    found = imported_modules(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_dns_never_imports_the_agent_or_anything_above_it() -> None:
    upward = sorted(f"{path.relative_to(PACKAGE)} imports {name}"
                    for path in (PACKAGE / "dns").glob("*.py")
                    for name in imported_modules(path)
                    if name.startswith(("overlaynet.agent", "overlaynet.api", "overlaynet.daemon")))
    assert upward == []


@pytest.mark.parametrize("module", SANS_IO)
def test_the_pure_cores_do_no_io(module: str) -> None:
    assert all_imports(PACKAGE / module) & IO_MODULES == set()


def test_no_class_has_more_than_max_methods() -> None:
    big = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                n = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                if n > MAX_METHODS:
                    big.append(f"{path.relative_to(PACKAGE)}:{node.name} has {n} methods")
    assert big == []
