"""The CNI protocol (spec 1.1.0, results also in 0.3.x/0.4.0 shape): environment, config, results,
errors. Pure: no I/O, so every mapping is unit tested.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import Struct

from overlaynet import model
from overlaynet.paths import DEFAULT_SOCKET

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST = "1.1.0"
# Endpoints this plugin makes carry the label owner=cni (and, belt and braces, an id ending in
# "cni"; overlayd's own ids are hex), so GC can tell them from Docker's or overlayctl's.
ID_SUFFIX = "cni"
OWNER = "cni"

# Error codes from the spec; 100+ are ours.
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_READY = 50
ERR_DAEMON = 100  # overlayd refused the request (its message says why)
ERR_CHECK_FAILED = 101


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class Invocation:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: str = ""


REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "STATUS": (),
    "VERSION": (),
    "GC": (),
}


def parse_env(env: dict[str, str]) -> Invocation:
    command = env.get("CNI_COMMAND", "")
    if command not in REQUIRED_ENV:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}: expected one of "
                       + ", ".join(REQUIRED_ENV))
    missing = [k for k in REQUIRED_ENV[command] if not env.get(k)]
    if missing:
        raise CniError(ERR_INVALID_ENV, f"{command} needs the environment variable(s) {', '.join(missing)}")
    return Invocation(
        command=command, container_id=env.get("CNI_CONTAINERID", ""), netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""), args=parse_args(env.get("CNI_ARGS") or ""), path=env.get("CNI_PATH", ""),
    )


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS as libcni reads it: `K=V` pairs separated by `;`, each with exactly one `=` and a
    key. Anything else is refused with code 4 (invalid environment variables), as the spec asks:
    a runtime that sends `;;==;IP` gets told, instead of a static IP silently ignored."""
    args: dict[str, str] = {}
    if not text:
        return args
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS {text[:200]!r} does not parse: {item[:80]!r} is not "
                           "KEY=VALUE (expected pairs such as IgnoreUnknown=1;IP=198.19.1.9 separated by ';')")
        args[key] = value
    return args


def answer_version(stdin: str) -> str:
    """The cniVersion to answer in: the config's if it is one we speak, else the latest."""
    try:
        raw = json.loads(stdin)
    except (ValueError, RecursionError):
        return LATEST
    version = raw.get("cniVersion") if isinstance(raw, dict) else None
    return version if version in SUPPORTED_VERSIONS else LATEST


# The keys of the network config this plugin reads, typed: a config whose known keys have the wrong
# type is refused (code 7) instead of failing deep inside a command. Unknown keys pass through.
class RuntimeConfig(Struct):
    ips: list[str] | None = None
    mac: str | None = None
    aliases: dict[str, list[str]] | None = None


class CniArgs(Struct):
    ips: list[str] | None = None


class Args(Struct):
    cni: CniArgs | None = None


class PrevIP(Struct):
    address: str = ""


class PrevResult(Struct):
    ips: list[PrevIP] | None = None


class Attachment(Struct):
    containerID: str = ""  # noqa: N815 (the spec's spelling)
    ifname: str = ""


class ConfBody(Struct):
    cniVersion: str = ""  # noqa: N815
    name: str = ""
    network: str | None = None
    socket: str | None = None
    subnet: str | None = None
    egress: bool = False
    runtimeConfig: RuntimeConfig | None = None  # noqa: N815
    args: Args | None = None
    prevResult: PrevResult | None = None  # noqa: N815
    dns: dict[str, Any] | None = None
    valid_attachments: list[Attachment] | None = msgspec.field(default=None, name="cni.dev/valid-attachments")


@dataclass
class NetConf:
    cni_version: str
    name: str
    network: str  # the overlaynet network
    socket: str
    subnet: str | None
    raw: dict[str, Any]
    body: ConfBody = field(default_factory=ConfBody)

    @property
    def runtime(self) -> RuntimeConfig:
        return self.body.runtimeConfig or RuntimeConfig()


def parse_config(text: str, command: str) -> NetConf:
    try:
        raw = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise CniError(ERR_DECODE, f"network configuration on stdin is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CniError(ERR_DECODE, "network configuration on stdin must be a JSON object")
    try:
        body = msgspec.convert(raw, ConfBody)
    except msgspec.ValidationError as e:
        raise CniError(ERR_INVALID_CONFIG, f"invalid network configuration: {e}") from None
    version = body.cniVersion
    if command != "VERSION":
        if version not in SUPPORTED_VERSIONS:
            raise CniError(ERR_INCOMPATIBLE_VERSION,
                           f"cniVersion {version!r} is not supported; use one of {', '.join(SUPPORTED_VERSIONS)}")
        if not isinstance(raw.get("name"), str) or not raw["name"]:
            raise CniError(ERR_INVALID_CONFIG, "the network configuration needs a \"name\"")
    name = body.name
    return NetConf(version or LATEST, name, body.network or name, body.socket or DEFAULT_SOCKET,
                   body.subnet or None, raw, body)


def endpoint_id(network: str, container_id: str, ifname: str) -> str:
    """Stable per attachment, so DEL/CHECK/GC find the endpoint from what the runtime passes."""
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()
    return digest[: 32 - len(ID_SUFFIX)] + ID_SUFFIX


def labels(conf: NetConf, inv: Invocation) -> dict[str, str]:
    return {"owner": OWNER, "cni.network": conf.name, "cni.containerID": inv.container_id,
            "cni.ifname": inv.ifname}


def is_ours(endpoint: dict[str, Any]) -> bool:
    owner = (endpoint.get("labels") or {}).get("owner")
    if owner is not None:
        return bool(owner == OWNER)
    return str(endpoint.get("id", "")).endswith(ID_SUFFIX)


def requested_ip(conf: NetConf, inv: Invocation) -> str | None:
    """A static address: runtimeConfig "ips" (podman --ip, capability "ips") or CNI_ARGS IP=."""
    if conf.runtime.ips:
        return conf.runtime.ips[0].split("/")[0]
    cni_args = conf.body.args.cni if conf.body.args else None
    if cni_args is not None and cni_args.ips:
        return cni_args.ips[0].split("/")[0]
    return inv.args.get("IP") or None


def dns_names(conf: NetConf, inv: Invocation) -> list[str]:
    """Names the endpoint answers to in overlaynet's DNS: the container's name (podman and
    Kubernetes runtimes pass it as CNI_ARGS K8S_POD_NAME) and the runtime's aliases for this network
    (capability "aliases": runtimeConfig {"aliases": {network name: [...]}}, `podman run
    --network-alias`). Names that are not valid DNS names are skipped, not refused."""
    candidates: list[str] = []
    if inv.args.get("K8S_POD_NAME"):
        candidates.append(inv.args["K8S_POD_NAME"])
    candidates += (conf.runtime.aliases or {}).get(conf.name) or []
    return model.usable_dns_names(candidates)


def requested_mac(conf: NetConf, inv: Invocation) -> str | None:
    return conf.runtime.mac or inv.args.get("MAC") or None


def build_result(conf: NetConf, inv: Invocation, endpoint: dict[str, Any]) -> dict[str, Any]:
    version = conf.cni_version
    interfaces = [
        {"name": endpoint.get("host_ifname", ""), "sandbox": ""},
        {"name": inv.ifname, "mac": endpoint["mac"], "sandbox": inv.netns},
    ]
    if version >= "1.0.0":
        interfaces[1]["mtu"] = endpoint["mtu"]
    ip: dict[str, Any] = {"address": f"{endpoint['ip']}/{endpoint['prefixlen']}", "interface": 1}
    if endpoint.get("gateway"):
        ip["gateway"] = endpoint["gateway"]
    if version.startswith("0.3."):
        ip["version"] = "4"
    interfaces[0] = {k: v for k, v in interfaces[0].items() if v or k == "name"}
    result: dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": [ip]}
    if endpoint.get("egress") and endpoint.get("gateway"):
        # --egress networks: the default route goes via the gateway into the sandbox and out
        # through this host. Otherwise the gateway is only the anycast DNS address, not a router.
        result["routes"] = [{"dst": "0.0.0.0/0", "gw": endpoint["gateway"]}]
    if conf.body.dns:
        result["dns"] = conf.body.dns
    return result


def version_result() -> dict[str, Any]:
    return {"cniVersion": LATEST, "supportedVersions": SUPPORTED_VERSIONS}


def prev_result_ips(conf: NetConf) -> list[str]:
    prev = conf.body.prevResult
    return [ip.address.split("/")[0] for ip in (prev.ips or [])] if prev else []


def valid_attachments(conf: NetConf) -> list[tuple[str, str]]:
    return [(a.containerID, a.ifname) for a in conf.body.valid_attachments or [] if a.containerID]
