"""`overlaynet-cni`: a CNI plugin (spec 1.1.0; results for 0.3.0-1.1.0) backed by overlayd.

Invoked by a runtime with CNI_COMMAND=ADD|DEL|CHECK|STATUS|VERSION|GC and the network config on
stdin; the result (or a CNI error object) goes to stdout. `overlaynet-cni install --dir DIR` puts a
launcher into a CNI bin directory. See docs/cni.md.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from overlaynet.plugins.cni import spec
from overlaynet.plugins.cni.spec import CniError


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _run(inv: spec.Invocation, conf: spec.NetConf) -> dict[str, Any] | None:
    from overlaynet.api.client import Client
    from overlaynet.plugins.cni import commands

    # Generous but bounded: a runtime waits on us, and a hung daemon must not hang it forever.
    api = Client(conf.socket, timeout=30.0)
    if inv.command == "ADD":
        return commands.add(api, conf, inv)
    if inv.command == "DEL":
        commands.delete(api, conf, inv)
        return None
    if inv.command == "CHECK":
        commands.check(api, conf, inv)
        return None
    if inv.command == "STATUS":
        commands.status(api, conf)
        return None
    if inv.command == "GC":
        commands.gc(api, conf)
        return None
    raise CniError(spec.ERR_INVALID_ENV, f"unknown CNI_COMMAND {inv.command}")


def run(env: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """One invocation: (exit code, JSON to print or None)."""
    version = spec.answer_version(stdin)  # errors speak the caller's version, even before parsing
    try:
        inv = spec.parse_env(env)
        if inv.command == "VERSION":
            return 0, spec.version_result()
        conf = spec.parse_config(stdin, inv.command)
        version = conf.cni_version
        result = _run(inv, conf)
        return 0, result
    except CniError as e:
        return (e.code if e.code in (spec.ERR_NOT_READY, 51) else 1), e.to_json(version)
    except Exception as e:  # a bug: still answer in CNI's format, never a bare traceback
        return 1, CniError(spec.ERR_IO, f"overlaynet-cni internal error: {type(e).__name__}: {e}").to_json(version)


USAGE = """overlaynet-cni: the overlaynet CNI plugin.
A container runtime runs it with CNI_COMMAND set and the network config on stdin.
  overlaynet-cni install [--dir /opt/cni/bin]   install the plugin into a CNI bin directory
  overlaynet-cni version                        print the supported CNI versions (JSON)
  overlaynet-cni --version                      print overlaynet's version
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "install":
        from overlaynet.plugins.cni.install import main as install_main

        return install_main(argv[1:])
    if argv and argv[0] == "version":
        _print(spec.version_result())
        return 0
    if argv and argv[0] == "--version":
        from overlaynet import __version__

        print(f"overlaynet-cni {__version__} (CNI {', '.join(spec.SUPPORTED_VERSIONS)})")
        return 0
    if "CNI_COMMAND" not in os.environ:
        sys.stderr.write(USAGE)
        return 1 if not argv or argv[0] not in ("-h", "--help", "help") else 0
    stdin = "" if os.environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() else sys.stdin.read()
    code, output = run(dict(os.environ), stdin)
    if output is not None:
        _print(output)
    return code
