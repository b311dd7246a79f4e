"""Replicated-table CRDT: merge is a join (idempotent, commutative, associative), visibility follows
owner liveness, and the change events let a reconciler rebuild the live view."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.gossip.tables import Record, TableStore

pytestmark = pytest.mark.unit

records = st.builds(
    Record,
    table=st.sampled_from(["networks", "endpoints"]),
    key=st.sampled_from(["a", "b", "c"]),
    value=st.one_of(st.none(), st.fixed_dictionaries({"v": st.integers(0, 3)})),
    lamport=st.integers(0, 4),
    owner=st.sampled_from(["h1", "h2"]),
).map(lambda r: Record(r.table, r.key, r.value, r.lamport, r.owner,
                       None if r.value is not None else 100.0 + r.lamport % 2))


def store(recs: list[Record], live: set[str] | None = None) -> TableStore:
    alive = {"h1", "h2"} if live is None else live
    s = TableStore(lambda o: o in alive)
    for r in recs:
        s.merge(copy.copy(r))  # stores own their records; never share objects between stores
    return s


def snapshot(s: TableStore) -> dict:
    return {(r.table, r.key): r.as_tuple() for r in s.records()}


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=12))
def test_merge_is_idempotent(recs: list[Record]) -> None:
    assert snapshot(store(recs + recs)) == snapshot(store(recs))


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=12), st.randoms(use_true_random=False))
def test_merge_is_commutative(recs: list[Record], rnd) -> None:
    shuffled = list(recs)
    rnd.shuffle(shuffled)
    assert snapshot(store(shuffled)) == snapshot(store(recs))


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=8), st.lists(records, max_size=8), st.lists(records, max_size=8))
def test_merge_is_associative(a: list[Record], b: list[Record], c: list[Record]) -> None:
    ab_then_c = store(list(store(a + b).records()) + c)
    a_then_bc = store(a + list(store(b + c).records()))
    assert snapshot(ab_then_c) == snapshot(a_then_bc)
    assert store(a + b + c).digests() == ab_then_c.digests()


@settings(max_examples=100, deadline=None)
@given(st.lists(records, max_size=15), st.sets(st.sampled_from(["h1", "h2"])))
def test_change_events_rebuild_the_live_view(recs: list[Record], live: set[str]) -> None:
    alive = set(live)
    s = TableStore(lambda o: o in alive)
    mirror: dict[tuple[str, str], dict] = {}

    def apply(changes) -> None:
        for ch in changes:
            if ch is None:
                continue
            assert mirror.get((ch.table, ch.key)) == ch.old
            if ch.new is None:
                mirror.pop((ch.table, ch.key), None)
            else:
                mirror[(ch.table, ch.key)] = ch.new

    for r in recs:
        apply([s.merge(copy.copy(r))[1]])
    for owner in ["h1", "h2"]:  # owners die and come back: the view follows
        was = owner in alive
        alive ^= {owner}
        apply(s.owner_changed(owner, was, owner in alive))
    view = {(t, k): v for t in s.table_names() for k, v in s.view(t).items()}
    assert view == mirror


def test_dead_owner_entries_are_hidden_then_restored() -> None:
    alive = {"h1", "h2"}
    s = TableStore(lambda o: o in alive)
    s.merge(Record("endpoints", "e1", {"ip": "198.19.0.2"}, 3, "h1"))
    s.merge(Record("endpoints", "e2", {"ip": "198.19.0.3"}, 4, "h2"))
    alive.discard("h1")
    changes = s.owner_changed("h1", True, False)
    assert [(c.key, c.old, c.new) for c in changes] == [("e1", {"ip": "198.19.0.2"}, None)]
    assert s.view("endpoints") == {"e2": {"ip": "198.19.0.3"}}
    alive.add("h1")
    s.owner_changed("h1", False, True)
    assert set(s.view("endpoints")) == {"e1", "e2"}


def test_local_writes_win_and_tombstones_expire_once() -> None:
    s = TableStore(lambda o: True)
    s.merge(Record("networks", "blue", {"vni": 1}, 41, "h2"))
    rec, change = s.write("networks", "blue", {"vni": 2}, "h1", now=0.0, tombstone_ttl=10.0)
    assert rec.lamport == 42 and change is not None and change.new == {"vni": 2}
    rec, change = s.write("networks", "blue", None, "h1", now=1.0, tombstone_ttl=10.0)
    assert change is not None and change.old == {"vni": 2} and change.new is None
    assert s.view("networks") == {}
    # The same tombstone arriving with a longer residual life does not extend it.
    assert s.merge(Record("networks", "blue", None, rec.lamport, "h1", 50.0)) == (False, None)
    assert s.expire(10.5) == 0
    assert s.expire(11.0) == 1
    assert s.get("networks", "blue") is None
