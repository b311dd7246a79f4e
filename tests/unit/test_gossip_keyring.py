"""AES-GCM keyring: sealing, rotation without restart (locally and cluster-wide), key files, and a
host with the wrong key staying out of the cluster."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from overlaynet.gossip import KeyringChange
from overlaynet.gossip.keyring import AuthError, Keyring, KeyringError, generate_key
from overlaynet.gossip.sim import Simulation

pytestmark = pytest.mark.unit


def test_seal_open_and_failures() -> None:
    k1, k2 = generate_key(), generate_key()
    ring = Keyring([k1])
    sealed = ring.encrypt(b"hello", b"udp")
    assert ring.decrypt(sealed, b"udp") == b"hello"
    with pytest.raises(AuthError):
        ring.decrypt(sealed, b"tcp")  # a datagram cannot be replayed as a stream frame
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(AuthError):
        ring.decrypt(bytes(tampered), b"udp")
    with pytest.raises(AuthError):
        Keyring([k2]).decrypt(sealed, b"udp")
    with pytest.raises(AuthError):
        ring.decrypt(b"\x93\x01", b"udp")


def test_rotation_install_use_remove() -> None:
    k1, k2 = generate_key(), generate_key()
    old = Keyring([k1])
    ring = Keyring([k1])
    assert ring.install(k2) and not ring.install(k2)
    assert ring.primary == k1
    assert ring.decrypt(Keyring([k2]).encrypt(b"x", b"udp"), b"udp") == b"x"  # decrypts with any key
    assert ring.use(k2) and ring.primary == k2
    assert old.decrypt(Keyring([k1, k2]).encrypt(b"y", b"udp"), b"udp") == b"y"
    with pytest.raises(KeyringError):
        ring.remove(k2)  # never the primary
    assert ring.remove(k1) and not ring.remove(k1)
    with pytest.raises(AuthError):
        ring.decrypt(old.encrypt(b"z", b"udp"), b"udp")
    with pytest.raises(KeyringError):
        ring.install(b"short")


def test_key_file_roundtrip_is_atomic_and_private(tmp_path) -> None:
    k1, k2 = generate_key(), os.urandom(16)
    path = tmp_path / "gossip.keys"
    ring = Keyring([k1, k2], path=path)
    ring.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines() == [base64.b64encode(k).decode() for k in (k1, k2)]
    assert [p.name for p in tmp_path.iterdir()] == ["gossip.keys"]  # no temp file left behind
    loaded = Keyring.load(path)
    assert loaded.keys == [k1, k2] and loaded.primary == k1


@pytest.mark.parametrize("content, needle", [
    ("", "holds no keys"),
    ("not base64!!\n", "not valid base64"),
    (base64.b64encode(b"x" * 10).decode() + "\n", "16, 24 or 32 bytes"),
])
def test_bad_key_files_give_one_clear_error(tmp_path, content: str, needle: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(KeyringError, match=needle):
        Keyring.load(path)
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "missing")


def test_cluster_wide_rotation_without_restart() -> None:
    k1, k2 = generate_key(), generate_key()
    sim = Simulation(seed=12, loss=0.02)
    sim.add_cluster(15, spacing=0.02, keyring_factory=lambda: Keyring([k1]))
    assert sim.run_until_true(sim.converged, 10) is not None
    changes: list[tuple[str, str]] = []
    sim.observers.append(lambda t, h, ev: changes.append((h, ev.op)) if isinstance(ev, KeyringChange) else None)

    def everywhere(pred) -> bool:
        return all(pred(n.core.keyring) for n in sim.nodes.values())

    def op(name: str, key: bytes) -> None:
        node = sim.nodes["n3"]
        node.core.key_op(name, key, sim.now)
        sim._flush(node)

    op("install", k2)
    assert sim.run_until_true(lambda: everywhere(lambda r: k2 in r.keys), 5) is not None
    op("use", k2)
    assert sim.run_until_true(lambda: everywhere(lambda r: r.primary == k2), 5) is not None
    op("remove", k1)
    assert sim.run_until_true(lambda: everywhere(lambda r: r.keys == [k2]), 5) is not None
    assert len(changes) == 45
    sim.run_for(3.0)
    assert sim.converged()
    # Updates still flow, only under the new key, and a host with just the old key is now out.
    node = sim.nodes["n8"]
    node.core.set("networks", "after-rotation", {"vni": 7}, sim.now)
    sim._flush(node)
    sim.run_for(1.0)
    assert all(n.core.table("networks") == {"after-rotation": {"vni": 7}} for n in sim.nodes.values())
    stale = sim.add_node("stale", seeds=["n0"], keyring=Keyring([k1]))
    sim.run_for(5.0)
    assert all(n.core.member("stale") is None for n in sim.nodes.values() if n is not stale)
    assert stale.core.table("networks") == {}


def test_a_host_with_the_wrong_key_stays_out() -> None:
    key = generate_key()
    sim = Simulation(seed=13)
    sim.add_cluster(8, spacing=0.02, keyring_factory=lambda: Keyring([key]))
    sim.run_until_true(sim.converged, 5)
    intruder = sim.add_node("intruder", seeds=["n0", "n1"], keyring=Keyring([generate_key()]))
    plain = sim.add_node("plain", seeds=["n2"])  # no keyring at all: also refused (fails closed)
    sim.run_for(10.0)
    for n in sim.nodes.values():
        if n not in (intruder, plain):
            assert n.core.member("intruder") is None and n.core.member("plain") is None
    assert [m.name for m in intruder.core.members()] == ["intruder"]
    assert sum(n.core.stats["auth_failed"] for n in sim.nodes.values()) > 0
