"""Keyring changes spread by gossip (Serf's `keys` query, as a broadcast): applied here, queued for
everybody, and applied when another member's arrives (if accept_key_ops). Each applied change is a
KeyringChange event; the daemon saves the key file on it."""

from __future__ import annotations

from . import codec
from .broadcast import KeyOpKey
from .keyring import Keyring, KeyringError, key_id
from .runtime import Runtime
from .state import Addr, KeyringChange


class KeyOps:
    def __init__(self, rt: Runtime, keyring: Keyring | None) -> None:
        self.rt = rt
        self.keyring = keyring

    def request(self, op: str, key: bytes, broadcast: bool) -> bool:
        """Our own change: apply it, and (broadcast) ask every member to do the same."""
        if self.keyring is None:
            raise KeyringError("gossip runs without encryption; there is no keyring to change")
        changed = self._apply(op, key)
        if broadcast:
            self.rt.queue(KeyOpKey(key), codec.KeyOp(op, key))
        return changed

    def _apply(self, op: str, key: bytes) -> bool:
        kr = self.keyring
        assert kr is not None
        if op == "install":
            changed = kr.install(key)
        elif op == "use":
            changed = kr.use(key)
        elif op == "remove":
            changed = kr.remove(key)
        else:
            raise KeyringError(f"unknown key operation {op!r}")
        if changed:
            self.rt.refresh_budget()
            self.rt.events.append(KeyringChange(op, key_id(key).hex()))
        return changed

    def on_key_op(self, msg: codec.KeyOp, src: Addr, sender: str) -> None:
        stats = self.rt.stats
        if self.keyring is None or not self.rt.cfg.accept_key_ops:
            stats["key_ops_rejected"] += 1
            return
        try:
            changed = self._apply(msg.op, msg.key)
        except KeyringError:
            stats["key_ops_rejected"] += 1
            return
        if changed:
            stats["key_ops_applied"] += 1
            self.rt.queue(KeyOpKey(msg.key), msg)
