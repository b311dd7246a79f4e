"""Member records, the events the core reports, and the I/O requests it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Addr = tuple[str, int]


class MemberState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# Wire encoding of states (push-pull), small ints keep the full-state dump compact.
STATE_CODES = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}
CODE_STATES = {v: k for k, v in STATE_CODES.items()}


@dataclass
class Member:
    name: str
    addr: str
    port: int
    incarnation: int
    state: MemberState
    state_change: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Counts as present: its table entries are visible, it is probed and gossiped to."""
        return self.state is MemberState.ALIVE or self.state is MemberState.SUSPECT

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.addr, self.port, self.state.value, self.incarnation,
                          self.state_change, dict(self.meta))


@dataclass(frozen=True)
class MemberInfo:
    name: str
    addr: str
    port: int
    state: str  # "alive" | "suspect" | "dead" | "left"
    incarnation: int
    last_change: float  # core clock (facade converts to wall-clock seconds)
    meta: dict[str, Any]


@dataclass(frozen=True)
class MemberChange:
    """A member's state changed. old is None for a new member; new is None when it was reaped."""

    name: str
    old: str | None
    new: str | None
    member: MemberInfo


@dataclass(frozen=True)
class TableChange:
    """The live view of (table, key) changed: old/new are the visible values (None = absent)."""

    table: str
    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    owner: str


@dataclass(frozen=True)
class KeyringChange:
    op: str  # "install" | "use" | "remove"
    key_id: str


Event = MemberChange | TableChange | KeyringChange


@dataclass(frozen=True)
class Datagram:
    dest: Addr
    data: bytes


@dataclass(frozen=True)
class StreamRequest:
    """Open TCP to dest, send data as one frame; if expect_reply, feed the reply frame back to
    GossipCore.handle_stream(reply, dest, now). tag lets the transport match join replies."""

    dest: Addr
    data: bytes
    expect_reply: bool
    tag: str = ""
