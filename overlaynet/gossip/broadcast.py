"""Transmit-limited broadcast queue: what gets piggybacked on outgoing packets.

Every update this host learns or makes is queued once under a key; a newer update with the same key
(same member, same table entry) replaces the older one, so stale news is never sent. Packets are filled
with the least-transmitted (then newest) items first, up to the byte budget, and an item is dropped
after `limit` transmissions (retransmit_mult * ceil(log10(n+1)), see GossipConfig).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemberKey:
    """News about a member (alive / suspect / dead / left): the latest replaces the older."""

    name: str


@dataclass(frozen=True, slots=True)
class RecordKey:
    """A table record: a newer version of (table, key) replaces the older."""

    table: str
    key: str


@dataclass(frozen=True, slots=True)
class KeyOpKey:
    """A keyring operation on one key."""

    key: bytes


BroadcastKey = MemberKey | RecordKey | KeyOpKey

MIN_MSG = 4  # no message is smaller than this; stop scanning when less budget remains
MAX_MISSES = 8  # items that did not fit before we call the packet full (keeps get() O(packet))


class _Item:
    __slots__ = ("key", "data", "transmits")

    def __init__(self, key: BroadcastKey, data: bytes) -> None:
        self.key = key
        self.data = data
        self.transmits = 0


class BroadcastQueue:
    def __init__(self) -> None:
        self._items: dict[BroadcastKey, _Item] = {}
        # _buckets[t] holds keys sent t times, in insertion order (newest last).
        self._buckets: list[dict[BroadcastKey, None]] = [{}]

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: BroadcastKey, data: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]
        self._items[key] = _Item(key, data)
        self._buckets[0][key] = None

    def transmits(self, key: BroadcastKey) -> int | None:
        """How often the item was sent, None if it is no longer (or never was) queued."""
        item = self._items.get(key)
        return None if item is None else item.transmits

    def get(self, budget: int, limit: int) -> list[bytes]:
        """Pick messages totalling at most budget bytes and count one transmission for each."""
        picked: list[_Item] = []
        used = 0
        misses = 0  # stop scanning a long queue once the packet is nearly full
        items = self._items
        for bucket in self._buckets:
            if budget - used < MIN_MSG or misses >= MAX_MISSES:
                break
            for key in reversed(bucket):
                item = items[key]
                size = len(item.data)
                if used + size <= budget:
                    used += size
                    picked.append(item)
                    if budget - used < MIN_MSG:
                        break
                else:
                    misses += 1
                    if misses >= MAX_MISSES:
                        break
        for item in picked:
            del self._buckets[item.transmits][item.key]
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
                continue
            if item.transmits == len(self._buckets):
                self._buckets.append({})
            self._buckets[item.transmits][item.key] = None
        return [item.data for item in picked]
