"""Encrypted networks' secrets: one per network and key epoch, in the replicated table `netkeys`.

  netkeys  key = "<network>|<epoch>"  value = {network, epoch, secret (hex), created_at, by}

The host that creates an encrypted network writes epoch 1 (32 random bytes); a rotation writes the
next epoch and withdraws every epoch older than the previous one. The table travels only in
encrypted gossip (this host refuses encrypted networks when gossip runs --plaintext, and ignores the
table then), and each host mirrors its networks' secrets in the 0600 state dir
(`netkeys/<network>.json`, atomic writes) for a start with nobody else around.

Which epochs this host uses, from when the current epoch reached it (`plan`):
  - receive: the current epoch at once, plus the previous one for `switch_delay + overlap` seconds;
  - send: the previous epoch for `switch_delay` seconds (time for every peer to receive the new
    secret and install its inbound SAs), then the current one.
An epoch older than the previous one is never accepted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from overlaynet.agent.cluster import NETKEYS
from overlaynet.agent.host import Host
from overlaynet.dataplane import esp_keys
from overlaynet.errors import BadRequest
from overlaynet.model import Network

log = logging.getLogger("overlaynet.agent")

SECRET_LEN = 32
# 32-bit sequence numbers (no ESN): an outbound SA stops at 2**32 - 1, so a network whose busiest
# outbound SA passed half of that gets a new epoch (at 1 Mpps, about every 35 minutes).
ROTATE_AT_SEQ = 2**31
# After fastpathd refuses SAs because an inbound SPI collides, rotate at most this often per network.
COLLISION_ROTATE_EVERY = 60.0


@dataclass(frozen=True)
class EpochSecret:
    network: str
    epoch: int
    secret: bytes
    created_at: float  # wall clock, at the host that made it
    # Made because the previous epoch cannot be installed (an SPI collision): every host moves to it at
    # once and drops the previous one, instead of keeping the broken epoch through the overlap.
    replaces_broken: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = {"network": self.network, "epoch": self.epoch, "secret": self.secret.hex(),
                "created_at": self.created_at}
        return {**data, "replaces_broken": True} if self.replaces_broken else data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochSecret | None:
        """None for a record that is not a well-formed secret (counted and ignored, never used)."""
        try:
            secret = bytes.fromhex(str(data["secret"]))
            epoch = int(data["epoch"])
            if len(secret) < esp_keys.MIN_SECRET_LEN or not 1 <= epoch <= esp_keys.MAX_EPOCH:
                return None
            return cls(str(data["network"]), epoch, secret, float(data["created_at"]),
                       data.get("replaces_broken") is True)
        except (KeyError, TypeError, ValueError):
            return None


def sas_for(key_plan: KeyPlan, epochs: dict[int, EpochSecret], vni: int, me: str,
            peers: set[str]) -> list[dict[str, Any]]:
    """fastpathd's SAs (`sync_sas`, docs/dataplane.md) for one network: to each peer one outbound SA
    (the send epoch), from each peer one inbound SA per accepted epoch."""
    sas = []
    for peer in sorted(peers):
        out = esp_keys.derive_sa(epochs[key_plan.tx].secret, vni, key_plan.tx, me, peer)
        sas.append({"peer": peer, "dir": "out", "epoch": key_plan.tx, "spi": out.spi, "key": out.key,
                    "salt": out.salt})
        for epoch in key_plan.rx:
            sa = esp_keys.derive_sa(epochs[epoch].secret, vni, epoch, peer, me)
            sas.append({"peer": peer, "dir": "in", "epoch": epoch, "spi": sa.spi, "key": sa.key,
                        "salt": sa.salt})
    return sas


@dataclass(frozen=True)
class KeyPlan:
    """The epochs this host sends with and accepts now, for one network."""

    tx: int
    rx: tuple[int, ...]
    current: int
    current_age: float  # seconds since the current epoch was made (or reached us, if later)


def plan(epochs: dict[int, EpochSecret], seen_at: float, now_mono: float, now_wall: float,
         switch_delay: float, overlap: float) -> KeyPlan | None:
    """What to program for a network with these secrets; `seen_at` is when (monotonic) the current
    epoch first reached this host. The age counts from the later of its creation (wall clock) and its
    arrival here, so that a host that learns a new epoch late still waits before sending with it."""
    if not epochs:
        return None
    current = max(epochs)
    age = min(now_wall - epochs[current].created_at, now_mono - seen_at)
    previous = current - 1 if current - 1 in epochs else None
    if previous is None or epochs[current].replaces_broken:
        return KeyPlan(tx=current, rx=(current,), current=current, current_age=max(age, 0.0))
    tx = previous if age < switch_delay else current
    rx = (current, previous) if age < switch_delay + overlap else (current,)
    return KeyPlan(tx=tx, rx=rx, current=current, current_age=max(age, 0.0))


class NetworkKeys:
    """The secrets of this cluster's encrypted networks, their epochs and their rotation."""

    def __init__(self, host: Host, gossip_encrypted: bool) -> None:
        self.host = host
        self.gossip_encrypted = gossip_encrypted
        self._seen: dict[tuple[str, int], float] = {}  # (network, epoch) -> monotonic first sight
        self._collision_rotated: dict[str, float] = {}

    # ---- rules -----------------------------------------------------------------------------

    def refuse_without_encrypted_gossip(self, what: str) -> None:
        if not self.gossip_encrypted:
            raise BadRequest(f"cannot {what}: encrypted networks need encrypted gossip to carry their keys, "
                             "and overlayd runs with --plaintext; start it with a --key-file")

    # ---- the secrets -----------------------------------------------------------------------

    def secrets(self, network: str) -> dict[int, EpochSecret]:
        """The network's epochs this host holds (raw records: a secret outlives its writer)."""
        if not self.gossip_encrypted:
            return {}
        out = {}
        for value in self.host.cluster.netkey_records(network):
            secret = EpochSecret.from_dict(value)
            if secret is not None and secret.network == network:
                out[secret.epoch] = secret
                self._seen.setdefault((network, secret.epoch), time.monotonic())
        return out

    def key_plan(self, net: Network) -> KeyPlan | None:
        epochs = self.secrets(net.name)
        if not epochs:
            return None
        current = max(epochs)
        cfg = self.host.config
        return plan(epochs, self._seen[(net.name, current)], time.monotonic(), time.time(),
                    cfg.key_switch_delay, cfg.key_overlap)

    def create(self, network: str) -> EpochSecret:
        """Epoch 1 of a new encrypted network (before the network record itself is published)."""
        return self._publish(network, 1)

    def rotate(self, net: Network, why: str, replaces_broken: bool = False) -> EpochSecret:
        if not net.encrypted:
            raise BadRequest(f"network {net.name!r} is not encrypted: there is no key to rotate")
        self.refuse_without_encrypted_gossip(f"rotate the key of network {net.name!r}")
        epochs = self.secrets(net.name)
        current = max(epochs, default=0)
        if current >= esp_keys.MAX_EPOCH:
            raise BadRequest(f"network {net.name!r} used up its key epochs; re-create the network")
        new = self._publish(net.name, current + 1, replaces_broken)
        for old in epochs:
            if old < current:  # older than the one being replaced: nobody may use it any more
                self.host.cluster.delete_netkey(net.name, old)
        log.info("event=network-key-rotated network=%s epoch=%d why=%s", net.name, new.epoch, why)
        return new

    async def rotate_now(self, name: str) -> Network:
        """`overlayctl network rotate-key`: a new epoch now (every host switches on its own)."""
        async with self.host.lock:
            net = self.host.get_network(name)
            self.rotate(net, "operator")
        self.host.dirty.set()
        return net

    def _publish(self, network: str, epoch: int, replaces_broken: bool = False) -> EpochSecret:
        secret = EpochSecret(network, epoch, os.urandom(SECRET_LEN), time.time(), replaces_broken)
        self.host.cluster.put_netkey(network, epoch, secret.to_dict())
        self._seen[(network, epoch)] = time.monotonic()
        self.save(network)
        return secret

    def forget(self, network: str) -> None:
        """The network was removed: withdraw its secrets everywhere and here."""
        for epoch in self.secrets(network):
            self.host.cluster.delete_netkey(network, epoch)
        self.host.forget_netkeys(network)

    # ---- automatic rotation ----------------------------------------------------------------

    def due(self, networks: dict[str, Network]) -> list[Network]:
        """Encrypted networks whose current epoch is older than the rotation interval, when this host
        is the one that rotates (the live member with the smallest name: normally one writer)."""
        live = {m.name for m in self.host.cluster.live_members()}
        if not self.gossip_encrypted or (live and min(live) != self.host.name):
            return []
        now = time.time()
        out = []
        for net in networks.values():
            epochs = self.secrets(net.name) if net.encrypted else {}
            if epochs and now - epochs[max(epochs)].created_at >= self.host.config.key_rotation_interval:
                out.append(net)
        return out

    def collision(self, net: Network) -> bool:
        """fastpathd refused an SA whose inbound SPI is taken: a new epoch gives new SPIs, and the
        epoch that could not be installed is dropped at once (packets in flight with it are lost:
        this host could never have received them)."""
        return self.rotate_soon(net, "spi-collision", replaces_broken=True)

    def rotate_soon(self, net: Network, why: str, replaces_broken: bool = False) -> bool:
        """A rotation the fast path asked for (an SPI collision, sequence numbers running out): at
        most one per network a minute, and never before the last one's switch (a new epoch needs
        every peer's SAs before anyone sends with it)."""
        last = self._collision_rotated.get(net.name)
        if last is not None and time.monotonic() - last < COLLISION_ROTATE_EVERY:
            return False
        self._collision_rotated[net.name] = time.monotonic()
        self.rotate(net, why, replaces_broken)
        return True

    # ---- the state dir mirror --------------------------------------------------------------

    def save(self, network: str) -> None:
        epochs = self.secrets(network)
        if epochs:
            self.host.save_netkeys(network, {"epochs": [s.to_dict() for _, s in sorted(epochs.items())]})
        else:
            self.host.forget_netkeys(network)

    def changed(self, key: str) -> None:
        """A record of the table changed (here or by gossip): mirror that network's secrets."""
        self.save(key.rpartition("|")[0])

    def preload(self) -> None:
        """At start: the epochs mirrored in the state dir were with us before this start, so they
        count as seen when they were made (a restart must not make this host fall back to sending
        with the previous epoch, which the peers may have stopped accepting)."""
        now_mono, now_wall = time.monotonic(), time.time()
        for network, data in self.host.store.items(NETKEYS):
            for raw in data.get("epochs", []) if isinstance(data, dict) else []:
                secret = EpochSecret.from_dict(raw) if isinstance(raw, dict) else None
                if secret is not None:
                    self._seen[(network, secret.epoch)] = now_mono - max(0.0, now_wall - secret.created_at)

    def restore(self, networks: dict[str, Network]) -> None:
        """Re-publish cached secrets of a network the cluster holds none of (a one-host cluster that
        restarted), unless the network itself is gone."""
        if not self.gossip_encrypted:
            return
        for network, data in self.host.store.items(NETKEYS):
            if network not in networks:
                continue
            if self.secrets(network):
                continue
            for raw in data.get("epochs", []) if isinstance(data, dict) else []:
                secret = EpochSecret.from_dict(raw) if isinstance(raw, dict) else None
                if secret is not None and secret.network == network:
                    self.host.cluster.put_netkey(network, secret.epoch, secret.to_dict())
                    log.info("event=network-key-republished network=%s epoch=%d", network, secret.epoch)

    def view(self, net: Network) -> dict[str, Any]:
        """What `network inspect` shows: the epoch and its age, never a secret."""
        if not net.encrypted:
            return {"key_epoch": None, "key_age_s": None, "tx_epoch": None}
        p = self.key_plan(net)
        if p is None:
            return {"key_epoch": None, "key_age_s": None, "tx_epoch": None}
        return {"key_epoch": p.current, "key_age_s": round(p.current_age, 1), "tx_epoch": p.tx}
