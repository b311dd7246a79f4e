"""Replicated tables: a state-based CRDT of (table, key) -> value with Lamport versions.

Each record carries (lamport, owner). The higher version wins; ties (only possible when a restarted
host reuses a Lamport time) are broken by preferring a delete, then by the packed value, so merge is a
deterministic join: idempotent, commutative and associative (tests/unit/test_gossip_tables.py).

Deletes are tombstones with an absolute local expiry. On the wire they carry their *residual*
lifetime, so every host drops a tombstone at about the same moment instead of restarting the clock
on each hop. Two copies of the same tombstone keep the earlier expiry.

Visibility is separate from storage: the live view shows a record only if it is not a tombstone and
its owner (the host that wrote it) is alive or suspect. When the owner is declared dead or leaves its
records stay stored but hidden, and reappear if it comes back; they are forgotten when it is reaped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from .state import TableChange

Value = dict[str, Any]


class Record:
    __slots__ = ("table", "key", "value", "lamport", "owner", "expires")

    def __init__(self, table: str, key: str, value: Value | None, lamport: int, owner: str,
                 expires: float | None = None) -> None:
        self.table = table
        self.key = key
        self.value = value  # None = tombstone
        self.lamport = lamport
        self.owner = owner
        self.expires = expires  # tombstones only: local time after which it is dropped

    def __repr__(self) -> str:
        return (f"Record({self.table!r}, {self.key!r}, {self.value!r}, {self.lamport}, {self.owner!r}, "
                f"{self.expires!r})")

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.table, self.key, self.value, self.lamport, self.owner, self.expires)


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def newer(a: Record, b: Record) -> int:
    """+1 if a beats b, -1 if b beats a, 0 if they are the same version of the same write."""
    ka = (a.lamport, a.owner, a.value is None)
    kb = (b.lamport, b.owner, b.value is None)
    if ka != kb:
        return 1 if ka > kb else -1
    if a.value is None:
        return 0
    pa, pb = _packed(a.value), _packed(b.value)
    if pa == pb:
        return 0
    return 1 if pa > pb else -1


def _hash(rec: Record) -> int:
    h = hashlib.blake2b(_packed([rec.table, rec.key, rec.value, rec.lamport, rec.owner]), digest_size=8)
    return int.from_bytes(h.digest(), "big")


class TableStore:
    def __init__(self, owner_live: Callable[[str], bool]) -> None:
        self._owner_live = owner_live
        self._tables: dict[str, dict[str, Record]] = {}
        self._by_owner: dict[str, set[tuple[str, str]]] = {}
        self._tombstones: set[tuple[str, str]] = set()
        self._digest: dict[str, list[int]] = {}  # table -> [record count, xor of record hashes]
        self.clock = 0  # Lamport clock: above every version seen, so local writes always win

    # --- reading ---
    def get(self, table: str, key: str) -> Record | None:
        return self._tables.get(table, {}).get(key)

    def visible(self, rec: Record | None) -> Value | None:
        if rec is None or rec.value is None or not self._owner_live(rec.owner):
            return None
        return rec.value

    def view(self, table: str) -> dict[str, Value]:
        out: dict[str, Value] = {}
        live = self._owner_live
        for key, rec in self._tables.get(table, {}).items():
            if rec.value is not None and live(rec.owner):
                out[key] = rec.value
        return out

    def table_names(self) -> list[str]:
        return list(self._tables)

    def records(self, tables: set[str] | None = None) -> Iterator[Record]:
        for name, recs in self._tables.items():
            if tables is None or name in tables:
                yield from recs.values()

    def owners(self) -> list[str]:
        return list(self._by_owner)

    def digests(self) -> dict[str, list[int]]:
        return {t: list(d) for t, d in self._digest.items()}

    def __len__(self) -> int:
        return sum(len(r) for r in self._tables.values())

    # --- writing ---
    def write(self, table: str, key: str, value: Value | None, owner: str, now: float,
              tombstone_ttl: float) -> tuple[Record, TableChange | None]:
        """A local set (value) or delete (None): a new version above everything seen."""
        self.clock += 1
        rec = Record(table, key, value, self.clock, owner, now + tombstone_ttl if value is None else None)
        _, change = self.merge(rec)
        return rec, change

    def merge(self, rec: Record) -> tuple[bool, TableChange | None]:
        """Fold one record in. Returns (it was a newer version, change of the live view if any)."""
        if rec.lamport > self.clock:
            self.clock = rec.lamport
        recs = self._tables.get(rec.table)
        if recs is None:
            recs = self._tables[rec.table] = {}
            self._digest[rec.table] = [0, 0]
        cur = recs.get(rec.key)
        if cur is not None:
            order = newer(rec, cur)
            if order < 0:
                return False, None
            if order == 0:
                # Same write: only a tombstone's expiry can differ; keep the earlier one. Not news.
                if rec.expires is not None and cur.expires is not None and rec.expires < cur.expires:
                    cur.expires = rec.expires
                return False, None
        old_visible = self.visible(cur)
        self._store(cur, rec)
        new_visible = self.visible(rec)
        if old_visible is None and new_visible is None:
            return True, None
        if old_visible is not None and new_visible is not None and old_visible == new_visible:
            return True, None
        owner = rec.owner if new_visible is not None or cur is None else cur.owner
        return True, TableChange(rec.table, rec.key, old_visible, new_visible, owner)

    def _store(self, cur: Record | None, rec: Record) -> None:
        ident = (rec.table, rec.key)
        d = self._digest[rec.table]
        if cur is not None:
            self._unindex(cur)
            d[0] -= 1
            d[1] ^= _hash(cur)
        self._tables[rec.table][rec.key] = rec
        self._by_owner.setdefault(rec.owner, set()).add(ident)
        if rec.value is None:
            self._tombstones.add(ident)
        d[0] += 1
        d[1] ^= _hash(rec)

    def _unindex(self, rec: Record) -> None:
        ident = (rec.table, rec.key)
        owned = self._by_owner.get(rec.owner)
        if owned is not None:
            owned.discard(ident)
            if not owned:
                del self._by_owner[rec.owner]
        self._tombstones.discard(ident)

    def _remove(self, rec: Record) -> None:
        self._unindex(rec)
        del self._tables[rec.table][rec.key]
        d = self._digest[rec.table]
        d[0] -= 1
        d[1] ^= _hash(rec)

    # --- owner lifecycle ---
    def owner_changed(self, owner: str, was_live: bool, is_live: bool) -> list[TableChange]:
        """The owner's liveness flipped: its entries disappear from (or reappear in) the live view."""
        if was_live == is_live:
            return []
        changes = []
        for table, key in sorted(self._by_owner.get(owner, ())):
            rec = self._tables[table][key]
            if rec.value is not None:
                changes.append(TableChange(table, key, rec.value if was_live else None,
                                           rec.value if is_live else None, owner))
        return changes

    def forget_owner(self, owner: str) -> list[TableChange]:
        """Drop everything the (reaped) owner wrote. Returns view changes if it was still visible."""
        changes = []
        for table, key in sorted(self._by_owner.get(owner, ())):
            rec = self._tables[table][key]
            vis = self.visible(rec)
            self._remove(rec)
            if vis is not None:
                changes.append(TableChange(table, key, vis, None, owner))
        return changes

    def expire(self, now: float) -> int:
        """Drop tombstones whose lifetime ended. Returns how many."""
        gone = [i for i in self._tombstones if (self._tables[i[0]][i[1]].expires or 0.0) <= now]
        for table, key in gone:
            self._remove(self._tables[table][key])
        return len(gone)
