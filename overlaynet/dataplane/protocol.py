"""The fastpathd control protocol: msgpack maps streamed over a unix stream socket.

Request:  {"v": 1, "id": <int>, "op": <str>, "args": {<name>: <value>}}
Response: {"v": 1, "id": <same>, "ok": true, "result": <value>}
       or {"v": 1, "id": <same>, "ok": false, "error": "<one line: what was wrong and what to do>"}

Messages follow each other on the stream without extra framing (msgpack is self-delimiting). See
docs/dataplane.md for the operations.
"""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1
MAX_MESSAGE = 16 << 20  # a sync of a very large FDB still fits; anything bigger is a bug
# sync_fdb: the VTEP of a MAC that belongs to this host's own bridge (the anycast gateway). Frames
# for it are neither sent across the underlay nor ARP-answered by the fast path: the bridge has
# them already and answers for itself (the fast path maps it to VTEP 0: FP_FWD_LOCAL).
LOCAL_VTEP = "0.0.0.0"

OPS = (
    "ping",
    "add_network",
    "remove_network",
    "sync_fdb",
    "sync_flood",
    "sync_arp",
    "sync_peers",
    "sync_sas",
    "stats",
    "offloads",
    "networks",
)


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_MESSAGE)


def request(req_id: int, op: str, args: dict[str, Any]) -> bytes:
    return pack({"v": VERSION, "id": req_id, "op": op, "args": args})


def ok(req_id: Any, result: Any) -> bytes:
    return pack({"v": VERSION, "id": req_id, "ok": True, "result": result})


def error(req_id: Any, message: str) -> bytes:
    return pack({"v": VERSION, "id": req_id, "ok": False, "error": message})
