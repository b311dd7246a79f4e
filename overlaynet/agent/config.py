"""overlayd configuration: defaults < TOML file < command-line flags.

Every key of the TOML file has a flag of the same name (underscores become dashes).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from overlaynet.errors import BadRequest

DEFAULT_CONFIG = "/etc/overlaynet/overlayd.toml"
DEFAULT_SOCKET = "/run/overlaynet/overlayd.sock"
DEFAULT_STATE_DIR = "/var/lib/overlaynet"
DATAPLANES = ("kernel", "userspace")


@dataclass
class Config:
    name: str = field(default_factory=socket.gethostname)
    advertise: str | None = None  # this host's underlay IPv4 (the VTEP); detected if unset
    bind: str = "0.0.0.0"
    vxlan_port: int = 4789
    gossip_port: int = 7946
    join: list[str] = field(default_factory=list)
    state_dir: str = DEFAULT_STATE_DIR
    socket: str = DEFAULT_SOCKET
    dataplane: str = "userspace"  # the Cython fast path; "kernel" uses the Linux VXLAN device
    key_file: str | None = None
    plaintext: bool = False  # run gossip unencrypted: only when explicitly asked for
    resync_interval: float = 30.0  # seconds between full reconciliations (repairs drift)
    # Seconds to wait out concurrent cluster-wide claims (network names, address blocks) before
    # trusting them: well above gossip's propagation time (tens of ms on a LAN), so a conflict is
    # always seen by both sides. Paid once per network create and per new address block.
    settle_time: float = 0.5
    # Seconds after a host is declared dead before its address blocks may be taken by others.
    # Long enough to ride out a reboot; short enough that a dead host's range never stays stuck.
    ipam_reclaim_after: float = 300.0
    # After a start with known peers of which none answers, programming only adds entries for
    # this long (a restart must not cut traffic to hosts we simply have not heard from yet).
    startup_hold: float = 15.0
    # A failed host's forwarding entries stay in the dataplane this long after it is declared dead.
    # An overlayd restart (even kill -9) takes a few seconds, during which its containers keep
    # talking; withdrawing at once would cut them off for nothing (packets to a truly dead host are
    # lost either way). Its endpoints leave the tables and `endpoint ls --all` immediately.
    withdraw_delay: float = 10.0
    # userspace dataplane: after traffic, fastpathd busy-polls this long before it sleeps. Trades
    # CPU for latency (a sleeping worker costs a wake-up per burst); 0 (default) never spins.
    fastpath_spin_us: int = 0
    log_level: str = "info"

    def validate(self) -> Config:
        if not self.name or len(self.name) > 63:
            raise BadRequest(f"invalid --name {self.name!r}: 1-63 characters")
        for port_key in ("vxlan_port", "gossip_port"):
            port = getattr(self, port_key)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise BadRequest(f"invalid --{port_key.replace('_', '-')} {port!r}: choose 1..65535")
        for addr_key in ("advertise", "bind"):
            value = getattr(self, addr_key)
            if value is not None:
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise BadRequest(
                        f"invalid --{addr_key} {value!r}: expected an IPv4 address such as 198.18.0.1"
                    ) from None
        if not isinstance(self.fastpath_spin_us, int) or not 0 <= self.fastpath_spin_us <= 1_000_000:
            raise BadRequest(f"invalid --fastpath-spin-us {self.fastpath_spin_us!r}: choose 0..1000000 microseconds")
        if self.dataplane not in DATAPLANES:
            raise BadRequest(f"invalid --dataplane {self.dataplane!r}: choose kernel or userspace")
        for seed in self.join:
            parse_seed(seed, self.gossip_port)
        return self


def parse_seed(seed: str, default_port: int) -> tuple[str, int]:
    host, _, port = seed.partition(":")
    try:
        ipaddress.IPv4Address(host)
        port_number = int(port) if port else default_port
        if not 1 <= port_number <= 65535:
            raise ValueError
    except ValueError:
        raise BadRequest(f"invalid --join {seed!r}: expected ADDR or ADDR:PORT, e.g. 198.18.0.1:7946") from None
    return host, port_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help=f"TOML config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--name", help="this host's name in the cluster (default: hostname)")
    parser.add_argument("--advertise", metavar="ADDR", help="this host's underlay IPv4 address (the VTEP)")
    parser.add_argument("--bind", metavar="ADDR", help="address to bind gossip and VXLAN sockets (default 0.0.0.0)")
    parser.add_argument("--vxlan-port", type=int, help="VXLAN UDP port (default 4789)")
    parser.add_argument("--gossip-port", type=int, help="gossip UDP+TCP port (default 7946)")
    parser.add_argument(
        "--join", action="append", metavar="ADDR[:PORT]", help="a cluster member to join (repeatable)"
    )
    parser.add_argument("--state-dir", help=f"state directory (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--socket", help=f"API unix socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--dataplane", choices=DATAPLANES, help="kernel VXLAN or userspace fast path")
    parser.add_argument("--key-file", help="gossip keyring file (base64 keys, one per line, first is primary)")
    parser.add_argument(
        "--plaintext", action="store_true", default=None, help="run gossip without encryption (insecure)"
    )
    parser.add_argument("--resync-interval", type=float, help="seconds between full reconciliations (default 30)")
    parser.add_argument("--settle-time", type=float, help="seconds to wait out concurrent claims (default 0.5)")
    parser.add_argument("--ipam-reclaim-after", type=float,
                        help="seconds before a dead host's address blocks are reused (default 300)")
    parser.add_argument("--startup-hold", type=float,
                        help="seconds of add-only programming when no known peer answers at start (default 15)")
    parser.add_argument("--withdraw-delay", type=float,
                        help="seconds a failed host's entries stay programmed (default 10)")
    parser.add_argument("--fastpath-spin-us", type=int, metavar="US",
                        help="userspace dataplane: busy-poll this long after traffic before sleeping; "
                        "lower latency for a CPU per host while traffic flows (default 0: never)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")


def load(args: argparse.Namespace) -> Config:
    """Merge defaults, the TOML file and flags; raise BadRequest with a clear line on bad input."""
    config = Config()
    path = args.config or DEFAULT_CONFIG
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                data: dict[str, Any] = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BadRequest(f"cannot read config {path}: {e}") from None
        known = {option.name for option in fields(Config)}
        for key, value in data.items():
            attr = key.replace("-", "_")
            if attr not in known:
                raise BadRequest(f"unknown key {key!r} in {path}; known keys: {', '.join(sorted(known))}")
            setattr(config, attr, value)
    elif args.config:
        raise BadRequest(f"config file {path} does not exist")
    for option in fields(Config):
        value = getattr(args, option.name, None)
        if value is not None:
            setattr(config, option.name, value)
    if isinstance(config.join, str):
        config.join = [config.join]
    return config.validate()
