"""The replicated tables as one host sees them: local writes, merging gossiped and pushed records,
re-asserting our own entries after a restart, and anti-entropy: the full-state exchange (push-pull)
with a random live member on a timer, and serf's reconnect with a random dead one.

The CRDT itself is tables.py; which owners are live comes from membership.py.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .broadcast import RecordKey
from .membership import Membership
from .runtime import Runtime
from .state import Addr
from .tables import Record, TableStore, newer


class Replica:
    def __init__(self, rt: Runtime, tables: TableStore, membership: Membership) -> None:
        self.rt = rt
        self.tables = tables
        self.membership = membership
        self._own_intent: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._unknown_owner_since: dict[str, float] = {}

    # ---- local writes
    def write(self, table: str, key: str, value: dict[str, Any] | None) -> None:
        if type(table) is not str or type(key) is not str or not table or \
                len(table) > codec.MAX_NAME or len(key) > codec.MAX_NAME:
            raise ValueError(f"table and key must be strings of 1..{codec.MAX_NAME} characters")
        if value is not None:
            codec.check_value(value, f"{table}/{key}")
        rt = self.rt
        self._own_intent[(table, key)] = value
        rec, change = self.tables.write(table, key, value, rt.name, rt.now, rt.cfg.tombstone_ttl)
        if change is not None:
            rt.events.append(change)
        self._queue(rec)

    def _queue(self, rec: Record) -> None:
        self.rt.queue(RecordKey(rec.table, rec.key), codec.record_to_wire(rec, self.rt.now, codec.Table))

    def _merge(self, rec: Record, gossip: bool) -> None:
        if rec.owner in self.membership.reaped:
            return
        if rec.owner == self.rt.name:
            cur = self.tables.get(rec.table, rec.key)
            if cur is not None and newer(rec, cur) <= 0:
                return
            ident = (rec.table, rec.key)
            if ident in self._own_intent and self._own_intent[ident] != rec.value:
                # A version from our previous life beats what we wrote since restart: re-assert ours.
                self.tables.clock = max(self.tables.clock, rec.lamport)
                self.write(rec.table, rec.key, self._own_intent[ident])
                return
        is_new, change = self.tables.merge(rec)
        if change is not None:
            self.rt.events.append(change)
        if is_new and gossip:
            self._queue(rec)

    def on_table(self, msg: codec.Table, src: Any, sender: str) -> None:
        self._merge(codec.record_from_wire(msg, self.rt.now, self.rt.cfg.tombstone_ttl), gossip=True)

    # ---- push-pull
    def sync(self, dest: Addr, flags: int, tag: str) -> None:
        """Ask dest for a full-state exchange over TCP; its reply comes back through on_push_pull."""
        msg = codec.pack(self.push_pull_msg(flags, None))
        self.rt.stream(dest, [msg], expect_reply=True, tag=tag)

    def push_pull_tick(self) -> None:
        rt = self.rt
        rt.at(rt.now + rt.cfg.push_pull_scaled(self.membership.num_live()), self.push_pull_tick)
        dest = self.membership.random_live()
        if dest is not None:
            rt.stats["push_pulls"] += 1
            self.sync(dest, 0, "push-pull")

    def reconnect_tick(self) -> None:
        """Serf's reconnect: full sync with one random dead member, so a healed partition (or a host
        that came back without rejoining) is found again even after we stopped gossiping to it."""
        rt = self.rt
        rt.at(rt.now + rt.cfg.reconnect_interval, self.reconnect_tick)
        dest = self.membership.random_dead()
        if dest is not None:
            self.sync(dest, 0, "reconnect")

    def push_pull_msg(self, flags: int, their_digests: dict[str, Any] | None) -> codec.PushPull:
        digests = self.tables.digests()
        if their_digests is None:
            send: set[str] | None = None
        else:
            send = {t for t, d in digests.items() if their_digests.get(t) != d}
        now = self.rt.now
        records: list[codec.WireRecord] = [codec.record_to_wire(r, now) for r in self.tables.records(send)]
        return codec.PushPull(flags, self.tables.clock, self.membership.wire_members(), digests, records)

    def on_push_pull(self, msg: codec.PushPull, src: Any, sender: str) -> bytes | None:
        # Records new to us are news for our side of the cluster too (e.g. a healed partition), so
        # re-gossip them -- except the full dump a joining host pulls, which the cluster already has.
        regossip = msg.flags != codec.PP_JOIN | codec.PP_REPLY
        self.membership.merge_full_state(msg.members, sender)
        members = self.membership.members
        now, max_ttl = self.rt.now, self.rt.cfg.tombstone_ttl
        for w in msg.records:
            if w.owner not in members:
                continue  # the full member list came first: an owner still unknown is gone/forgotten
            self._merge(codec.record_from_wire(w, now, max_ttl), gossip=regossip)
        self.tables.clock = max(self.tables.clock, msg.lamport)
        if msg.flags & codec.PP_REPLY:
            return None
        return codec.pack(self.push_pull_msg(codec.PP_REPLY | (msg.flags & codec.PP_JOIN), msg.digests))

    # ---- periodic
    def reap(self) -> None:
        """Drop entries of owners nobody knows, and intents for keys no longer stored."""
        rt, now = self.rt, self.rt.now
        members = self.membership.members
        # Entries whose owner we never heard of (or already reaped) are dropped after the dead wait.
        for owner in self.tables.owners():
            if owner in members:
                self._unknown_owner_since.pop(owner, None)
            elif now - self._unknown_owner_since.setdefault(owner, now) > rt.cfg.dead_reap_timeout:
                rt.events.extend(self.tables.forget_owner(owner))
                del self._unknown_owner_since[owner]
        for key in [k for k in self._own_intent if self.tables.get(*k) is None]:
            del self._own_intent[key]
