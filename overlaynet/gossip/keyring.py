"""AES-GCM keyring: several keys, the primary encrypts, any installed key decrypts.

Sealed format (every UDP packet and TCP frame):
    [0x01 format][4-byte key id][12-byte nonce][ciphertext + 16-byte tag]
The key id (first 4 bytes of SHA-256 of the key) picks the key directly, so decrypting costs one
AES-GCM operation even with several keys installed. The associated data binds the format byte, the
key id and the channel ("udp"/"tcp"), so a datagram cannot be replayed as a stream frame.

Nonces come from os.urandom, the one place the sans-IO core uses real randomness: a seeded PRNG
would repeat nonces across restarts, which breaks GCM.

`cryptography` is imported when the first key is, not with this module: a cluster whose gossip runs
--plaintext never needs it, and its native part costs ~8 MiB of RSS per daemon (docs/performance.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from overlaynet.atomic import write_atomic

FORMAT = 0x01
KEY_ID_LEN = 4
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN
KEY_SIZES = (16, 24, 32)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyringError(ValueError):
    pass


class AuthError(ValueError):
    """The sealed bytes are not from a holder of any installed key (or were tampered with)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_LEN]


def _aesgcm() -> type[AESGCM]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


def generate_key() -> bytes:
    return _aesgcm().generate_key(bit_length=256)


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError("key is not valid base64") from None
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"key must be 16, 24 or 32 bytes (AES-128/192/256), got {len(key)}")
    return key


class Keyring:
    def __init__(self, keys: list[bytes], path: str | Path | None = None) -> None:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        self._keys: list[bytes] = []  # [0] is the primary
        self._by_id: dict[bytes, AESGCM] = {}
        self.path = Path(path) if path is not None else None
        for k in keys:
            self.install(k)

    # --- key management ---
    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def keys(self) -> list[bytes]:
        return list(self._keys)

    def key_ids(self) -> list[str]:
        return [key_id(k).hex() for k in self._keys]

    def install(self, key: bytes) -> bool:
        """Add a key for decryption (not yet used to encrypt). False if it was already installed."""
        if len(key) not in KEY_SIZES:
            raise KeyringError(f"key must be 16, 24 or 32 bytes, got {len(key)}")
        kid = key_id(key)
        if kid in self._by_id:
            if key not in self._keys:
                raise KeyringError("key id collision with a different installed key")
            return False
        self._keys.append(key)
        self._by_id[kid] = _aesgcm()(key)
        return True

    def use(self, key: bytes) -> bool:
        """Make key the primary (installing it if needed). False if it already was."""
        changed = self.install(key)
        if self._keys[0] == key:
            return changed
        self._keys.remove(key)
        self._keys.insert(0, key)
        return True

    def remove(self, key: bytes) -> bool:
        """Remove a non-primary key. False if it was not installed."""
        if key not in self._keys:
            return False
        if self._keys[0] == key:
            raise KeyringError("cannot remove the primary key; make another key primary first")
        self._keys.remove(key)
        del self._by_id[key_id(key)]
        return True

    # --- sealing ---
    def encrypt(self, plaintext: bytes, channel: bytes) -> bytes:
        primary = self._keys[0]
        kid = key_id(primary)
        head = bytes([FORMAT]) + kid
        nonce = os.urandom(NONCE_LEN)
        return head + nonce + self._by_id[kid].encrypt(nonce, plaintext, head + channel)

    def decrypt(self, sealed: bytes, channel: bytes) -> bytes:
        if len(sealed) < OVERHEAD or sealed[0] != FORMAT:
            raise AuthError("not a sealed packet")
        head = sealed[: 1 + KEY_ID_LEN]
        aead = self._by_id.get(head[1:])
        if aead is None:
            raise AuthError("sealed with a key that is not installed")
        nonce = sealed[1 + KEY_ID_LEN : 1 + KEY_ID_LEN + NONCE_LEN]
        try:
            return aead.decrypt(nonce, sealed[1 + KEY_ID_LEN + NONCE_LEN :], head + channel)
        except Exception as e:
            from cryptography.exceptions import InvalidTag  # loaded already: `aead` is cryptography's

            if isinstance(e, InvalidTag):
                raise AuthError("authentication failed") from None
            raise

    # --- key file: base64 keys one per line, first = primary ---
    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise KeyringError(f"cannot read key file {p}: {e.strerror}") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise KeyringError(f"key file {p} holds no keys; generate one with `overlayctl keygen`")
        try:
            keys = [decode_key(ln) for ln in lines]
        except KeyringError as e:
            raise KeyringError(f"key file {p}: {e}") from None
        return cls(keys, path=p)

    def save(self, path: str | Path | None = None) -> None:
        """Atomically and durably write the key file (0600), see overlaynet/atomic.py."""
        p = Path(path) if path is not None else self.path
        if p is None:
            raise KeyringError("no key file path to save to")
        body = "".join(base64.b64encode(k).decode() + "\n" for k in self._keys).encode()
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(p), body, mode=0o600)
