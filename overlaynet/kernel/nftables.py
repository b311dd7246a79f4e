"""nftables through libnftables' JSON API (the `nftables` module, a ctypes binding to libnftables).

Why this and not pyroute2.nftables: pyroute2's nftables support reads rulesets but cannot build
rules with sets, meters or bridge-family matches; libnftables takes exactly the JSON that
`nft -j` prints and accepts, so a rule in the code reads like the documentation, and a test can
check the kernel's view with `nft -j list ruleset`. No process is spawned: it is a library call.

libnftables works in the calling thread's network namespace, so a namespaced call runs in a private
thread that enters the namespace first (netns.call_in_netns) and dies afterwards.

Every table overlaynet owns is named `overlaynet_*` and is replaced as a whole ("delete table" then
"add table" in one transaction), so programming it is idempotent and never leaves half a ruleset.
"""

from __future__ import annotations

from typing import Any

from .errors import KernelError
from .netns import call_in_netns

Command = dict[str, Any]


def _run(commands: list[Command]) -> dict[str, Any]:
    try:
        import nftables  # pip-nftables: a copy of Debian's python3-nftables; loads libnftables.so.1

        nft = nftables.Nftables()
    except (ImportError, OSError) as exc:
        raise KernelError(f"libnftables is not available ({exc}): install Debian's nftables package") from None
    nft.set_json_output(True)
    nft.set_handle_output(True)
    rc, output, error = nft.json_cmd({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    if rc != 0:
        raise KernelError(f"nftables refused the ruleset: {str(error).strip() or 'no reason given'}")
    return output if isinstance(output, dict) else {}


def run(netns: str | None, commands: list[Command]) -> dict[str, Any]:
    """Apply commands (one atomic transaction) in the netns at path `netns` (None: the caller's)."""
    if netns is None:
        return _run(commands)
    return call_in_netns(netns, _run, commands)


def list_table(netns: str | None, family: str, name: str) -> list[Command]:
    """The JSON objects of one table (its chains, sets and rules); [] when the table does not exist."""
    try:
        out = run(netns, [{"list": {"table": {"family": family, "name": name}}}])
    except KernelError:
        return []
    return [obj for obj in out.get("nftables", []) if "metainfo" not in obj]


def replace_table(netns: str | None, family: str, name: str, body: list[Command]) -> None:
    """Make table family/name hold exactly `body` (chains, sets, rules), in one transaction.

    "add table" before "delete table" makes the delete succeed when the table does not exist yet.
    """
    table = {"family": family, "name": name}
    run(netns, [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}, *body])


def delete_table(netns: str | None, family: str, name: str) -> None:
    """Remove table family/name if it exists."""
    table = {"family": family, "name": name}
    run(netns, [{"add": {"table": table}}, {"delete": {"table": table}}])
