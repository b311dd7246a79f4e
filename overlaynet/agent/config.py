"""overlayd configuration: defaults < TOML file < command-line flags, typed and range-checked at load.

`Config` is the one place a key is declared: its type, its range (msgspec `Meta`), its default and its
help text. The TOML file and the flags are converted into it by msgspec, which refuses unknown keys and
wrong types; a refusal becomes one line naming the key, what it must be and what it got, e.g.
`plaintext must be true or false, got "no"`. Every key has a flag of the same name (underscores
become dashes), generated from the same declaration, so adding a key is one line here.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import tomllib
import types
import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from overlaynet.errors import BadRequest
from overlaynet.paths import DEFAULT_CONFIG, DEFAULT_SOCKET, DEFAULT_STATE_DIR

DATAPLANES = ("kernel", "userspace")
# Prometheus /metrics and /healthz. Loopback by default: on out of the box for local checks
# (`curl localhost:7947/healthz`), exposed to nobody; next to gossip's 7946 so it is easy to find.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:7947"
LOG_LEVELS = ("debug", "info", "warning", "error")

# Value types: each says in `expect` what a user must write, which is the refusal line's middle.
_MONTH = 30 * 86400  # upper bound for every duration: larger is a typo, not a setting
Seconds = Annotated[float, Meta(ge=0, le=_MONTH, extra={"expect": "a number of seconds from 0 to 2592000"})]
Interval = Annotated[float, Meta(gt=0, le=_MONTH, extra={"expect": "a number of seconds above 0 (at most 2592000)"})]
Port = Annotated[int, Meta(ge=1, le=65535, extra={"expect": "a port number from 1 to 65535"})]
IPv4 = Annotated[str, Meta(extra={"expect": "an IPv4 address such as 198.18.0.1", "check": "ipv4"})]
Seeds = Annotated[list[str], Meta(extra={"expect": 'a list of "ADDR[:PORT]" strings, e.g. ["198.18.0.1:7946"]',
                                         "check": "seed"})]
HostName = Annotated[str, Meta(min_length=1, max_length=63, extra={"expect": "a name of 1 to 63 characters"})]
Path = Annotated[str, Meta(min_length=1, extra={"expect": "a path"})]
HostPort = Annotated[str, Meta(extra={"expect": 'ADDR:PORT with an IPv4 address, e.g. "0.0.0.0:7947", '
                                               'or "" for none', "check": "hostport"})]
QueryRate = Annotated[int, Meta(ge=0, le=1_000_000, extra={"expect": "a whole number of queries per second from 0 to 1000000"})]
Microseconds = Annotated[int, Meta(ge=0, le=1_000_000, extra={"expect": "a whole number of microseconds from 0 to 1000000"})]
FrameCount = Annotated[int, Meta(ge=1, le=10_000_000, extra={"expect": "a whole number of frames from 1 to 10000000"})]


def _help(text: str) -> Meta:
    return Meta(description=text)


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[HostName, _help("this host's name in the cluster (default: hostname)")] = msgspec.field(
        default_factory=socket.gethostname)
    advertise: Annotated[IPv4 | None, _help("this host's underlay IPv4 address (the VTEP); detected if unset")] = None
    bind: Annotated[IPv4, _help("address to bind gossip and VXLAN sockets (default 0.0.0.0)")] = "0.0.0.0"
    vxlan_port: Annotated[Port, _help("VXLAN UDP port (default 4789)")] = 4789
    gossip_port: Annotated[Port, _help("gossip UDP+TCP port (default 7946)")] = 7946
    esp_port: Annotated[Port, _help("encrypted networks: ESP-in-UDP port (RFC 3948; default 4500)")] = 4500
    join: Annotated[Seeds, _help("a cluster member to join (repeatable)")] = msgspec.field(default_factory=list)
    state_dir: Annotated[Path, _help(f"state directory (default {DEFAULT_STATE_DIR})")] = DEFAULT_STATE_DIR
    socket: Annotated[Path, _help(f"API unix socket (default {DEFAULT_SOCKET})")] = DEFAULT_SOCKET
    # "userspace": the Cython fast path; "kernel" uses the Linux VXLAN device.
    dataplane: Annotated[Literal["kernel", "userspace"], _help("kernel VXLAN or userspace fast path")] = "userspace"
    key_file: Annotated[Path | None, _help("gossip keyring file (base64 keys, one per line, first is primary)")] = None
    # Run gossip unencrypted: only when explicitly asked for, with a real boolean (never a truthy string).
    plaintext: Annotated[bool, _help("run gossip without encryption (insecure)")] = False
    resync_interval: Annotated[Interval, _help("seconds between full reconciliations (default 30)")] = 30.0
    # Seconds to wait out concurrent cluster-wide claims (network names, address blocks) before
    # trusting them: well above gossip's propagation time (tens of ms on a LAN), so a conflict is
    # always seen by both sides. Paid once per network create and per new address block.
    settle_time: Annotated[Seconds, _help("seconds to wait out concurrent claims (default 0.5)")] = 0.5
    # Seconds after a host is declared dead before its address blocks may be taken by others.
    # Long enough to ride out a reboot; short enough that a dead host's range never stays stuck.
    ipam_reclaim_after: Annotated[Seconds, _help(
        "seconds before a dead host's address blocks are reused (default 300)")] = 300.0
    # After a start with known peers of which none answers, programming only adds entries for
    # this long (a restart must not cut traffic to hosts we simply have not heard from yet).
    startup_hold: Annotated[Seconds, _help(
        "seconds of add-only programming when no known peer answers at start (default 15)")] = 15.0
    # A failed host's forwarding entries stay in the dataplane this long after it is declared dead.
    # An overlayd restart (even kill -9) takes a few seconds, during which its containers keep
    # talking; withdrawing at once would cut them off for nothing (packets to a truly dead host are
    # lost either way). Its endpoints leave the tables and `endpoint ls --all` immediately.
    withdraw_delay: Annotated[Seconds, _help("seconds a failed host's entries stay programmed (default 10)")] = 10.0
    # userspace dataplane: after traffic, fastpathd busy-polls this long before it sleeps. Trades
    # CPU for latency (a sleeping worker costs a wake-up per burst); 0 (default) never spins.
    fastpath_spin_us: Annotated[Microseconds, _help(
        "userspace dataplane: busy-poll this long after traffic before sleeping; lower latency for a "
        "CPU per host while traffic flows (default 0: never)")] = 0
    # Broadcast, multicast and unknown-unicast frames per second (and burst) each container port may
    # send, and each remote container may send us: ARP needs a few per second; a flood of 100k/s from
    # one container must not reach every container of the network (docs/security.md).
    bum_rate: Annotated[FrameCount, _help(
        "broadcast/multicast/unknown-unicast frames per second per container port and per remote "
        "container (default 1000)")] = 1000
    bum_burst: Annotated[FrameCount, _help("burst allowed above --bum-rate, in frames (default 2000)")] = 2000
    # All broadcast/multicast frames one peer host may send us per second, in total (its containers
    # are each capped at their first hop; this bounds a host that is not). Userspace: the fast path;
    # kernel: an nftables meter per peer address in the host namespace (kernel/vxlan_filter.py).
    peer_bum_rate: Annotated[FrameCount, _help(
        "broadcast/multicast frames per second one peer host may send in total "
        "(default 20000)")] = 20000
    # Encrypted networks (docs/encryption.md): a new key epoch every this many seconds (Docker's key
    # manager rotates every 12 h); senders switch to a new epoch `key_switch_delay` seconds after it
    # reached them (every peer has it by then: gossip spreads it in well under a second), and keep
    # accepting the previous one for `key_overlap` seconds more.
    key_rotation_interval: Annotated[Interval, _help(
        "encrypted networks: seconds between automatic key rotations (default 43200: 12 h)")] = 43200.0
    key_switch_delay: Annotated[Seconds, _help(
        "encrypted networks: seconds after a new key epoch arrives before this host sends with it "
        "(default 5)")] = 5.0
    key_overlap: Annotated[Seconds, _help(
        "encrypted networks: seconds the previous key epoch is still accepted after the switch "
        "(default 30)")] = 30.0
    log_level: Annotated[Literal["debug", "info", "warning", "error"], _help("default info")] = "info"
    dns_rate_limit: Annotated[QueryRate, _help("DNS queries per second per container address (burst: twice "
                                                "that; 0: unlimited; default 100)")] = 100
    # SIGHUP reopens it, so logrotate can move it away (reload.py lists what else a reload applies).
    log_file: Annotated[Path | None, _help("append logs to this file instead of stderr; SIGHUP reopens it")] = None
    log_format: Annotated[Literal["logfmt", "json"], _help(
        "log lines as logfmt key=value (default) or one JSON object per line")] = "logfmt"
    metrics_address: Annotated[HostPort, _help(
        f"serve Prometheus /metrics and /healthz on ADDR:PORT (default {DEFAULT_METRICS_ADDRESS}; "
        '"" for none)')] = DEFAULT_METRICS_ADDRESS


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config, include_extras=True)


def _extras(tp: Any) -> dict[str, Any]:
    """The merged `Meta.extra` of an annotated type (outermost wins), looking through `X | None`."""
    extra: dict[str, Any] = {}
    while True:
        if typing.get_origin(tp) is Annotated:
            base, *metas = typing.get_args(tp)
            for meta in metas:
                if isinstance(meta, Meta) and meta.extra:
                    extra = {**meta.extra, **extra}
            tp = base
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return extra
            tp = args[0]
        else:
            return extra


def _base(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def expectation(key: str) -> str:
    """What a valid value of `key` looks like, in words."""
    tp = _field_types()[key]
    extra = _extras(tp)
    if "expect" in extra:
        return str(extra["expect"]) + (" (or unset)" if _allows_none(tp) else "")
    base = _base(tp)
    if base is bool:
        return "true or false"
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(f'"{choice}"' for choice in typing.get_args(base))
    return getattr(base, "__name__", str(base))


def _allows_none(tp: Any) -> bool:
    base = _base(tp)
    return type(None) in typing.get_args(base)


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, booleans lower case)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def parse_seed(seed: str, default_port: int) -> tuple[str, int]:
    host, _, port = seed.partition(":")
    if not _check_ipv4(host) or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise BadRequest(f"invalid join address {_show(seed)}: expected ADDR or ADDR:PORT, e.g. 198.18.0.1:7946")
    return host, int(port) if port else default_port


def parse_host_port(text: str) -> tuple[str, int] | None:
    """ "ADDR:PORT" -> (ADDR, PORT), or None when it is not an IPv4 address and a port."""
    host, _, port = text.rpartition(":")
    if not _check_ipv4(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


def _semantic_checks(config: Config, where: dict[str, str]) -> None:
    """Checks msgspec's constraints cannot say (address syntax): same one-line form."""
    for key, tp in _field_types().items():
        check = _extras(tp).get("check")
        value = getattr(config, key)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            ok = (_check_ipv4(item) if check == "ipv4" else _seed_ok(item) if check == "seed"
                  else item == "" or parse_host_port(item) is not None if check == "hostport" else True)
            if not ok:
                raise BadRequest(_refusal(key, value, where))


def _seed_ok(seed: str) -> bool:
    try:
        parse_seed(seed, 1)
    except BadRequest:
        return False
    return True


def _refusal(key: str, value: Any, where: dict[str, str]) -> str:
    return f"{where.get(key, key)} must be {expectation(key)}, got {_show(value)}"


_ERROR_PATH = re.compile(r"at `\$\.(\w+)")


def _convert(data: dict[str, Any], where: dict[str, str], strict: bool) -> Config:
    try:
        config = msgspec.convert(data, Config, strict=strict)
    except msgspec.ValidationError as e:
        match = _ERROR_PATH.search(str(e))
        if not match or match.group(1) not in data:
            raise BadRequest(f"invalid configuration: {e}") from None
        key = match.group(1)
        raise BadRequest(_refusal(key, data[key], where)) from None
    _semantic_checks(config, where)
    return config


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config key. Values stay strings here: msgspec converts and checks them."""
    parser.add_argument("--config", default=None, help=f"TOML config file (default {DEFAULT_CONFIG})")
    for key, tp in _field_types().items():
        help_text = next((m.description for m in typing.get_args(tp)[1:]
                          if isinstance(m, Meta) and m.description), None)
        if _base(tp) is bool:
            parser.add_argument(_flag(key), action="store_true", default=None, help=help_text)
        elif key == "join":
            parser.add_argument(_flag(key), action="append", metavar="ADDR[:PORT]", help=help_text)
        else:
            parser.add_argument(_flag(key), metavar=key.upper(), help=help_text)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BadRequest(f"cannot read config {path}: {e}") from None
    known = set(_field_types())
    typed: dict[str, Any] = {}
    for key, value in data.items():
        attr = key.replace("-", "_")
        if attr not in known:
            raise BadRequest(f"unknown key {key!r} in {path}; known keys: {', '.join(sorted(known))}")
        typed[attr] = [value] if attr == "join" and isinstance(value, str) else value
    return typed


def load(args: argparse.Namespace) -> Config:
    """Merge defaults, the TOML file and flags; raise BadRequest with one clear line on bad input."""
    path = args.config or DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if os.path.exists(path):
        data = _read_toml(path)
    elif args.config:
        raise BadRequest(f"config file {path} does not exist")
    # The file's values must already have the right type (strict: "no" is not a boolean).
    _convert(data, {}, strict=True)
    flags = {key: getattr(args, key) for key in _field_types() if getattr(args, key, None) is not None}
    # Flags arrive as text: converted leniently ("30" is 30.0), still range-checked.
    where = {key: _flag(key) for key in flags}
    return _convert({**data, **flags}, where, strict=False)
