"""overlayctl: the command line. It talks only to overlayd's API.

Every failure is one line on stderr and a non-zero exit: 1 for errors overlayd reports or when it
cannot be reached, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from overlaynet import __version__
from overlaynet.api.client import SOCKET_ENV, ApiError, Client, default_socket
from overlaynet.cli.tables import human_bytes, human_count, render_table
from overlaynet.errors import BadRequest
from overlaynet.rules import MAX_VNI, MIN_VNI, validate_dns_name


class UsageError(Exception):
    pass


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        text = human(data)
        if text:
            print(text)


def parse_int(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {value!r}") from None


# ---- commands --------------------------------------------------------------------------------


def cmd_network_create(client: Client, args: argparse.Namespace) -> None:
    if args.no_gateway and args.gateway:
        raise UsageError("give either --gateway or --no-gateway, not both")
    gateway = None if args.no_gateway else (args.gateway or "auto")
    if args.no_gateway and args.egress:
        raise UsageError("--egress needs the gateway (containers route through it): drop --no-gateway")
    net = client.create_network(args.name, args.subnet, vni=parse_int(args.vni, "--vni"),
                                mtu=parse_int(args.mtu, "--mtu"), gateway=gateway, egress=args.egress,
                                encrypted=args.encrypted)
    emit(args, net, lambda n: f"network {n['name']} created: vni {n['vni']}, subnet {n['subnet']}, mtu {n['mtu']}"
                              + (f", gateway and DNS {n['gateway']}" if n.get("gateway") else ", no gateway (no DNS)")
                              + (", egress through each host" if n.get("egress") else "")
                              + (", encrypted (ESP)" if n.get("encrypted") else ""))


def network_rows(nets: list[dict[str, Any]]) -> str:
    return render_table(
        ["NAME", "VNI", "SUBNET", "MTU", "ENDPOINTS", "OWNER"],
        [[n["name"], n["vni"], n["subnet"], n["mtu"], n.get("endpoints", 0), n.get("owner", "")] for n in nets],
    )


def cmd_network_ls(client: Client, args: argparse.Namespace) -> None:
    emit(args, client.list_networks(), network_rows)


def cmd_network_inspect(client: Client, args: argparse.Namespace) -> int:
    if args.show_keys and os.geteuid() != 0:
        print("overlayctl: --show-keys prints secret key material: run it as root", file=sys.stderr)
        return 1
    net = client.get_network(args.name)
    if args.show_keys:
        net["keys"] = client.network_keys(args.name)
    if not args.json:
        net["attached"] = client.list_endpoints(args.name)
    emit(args, net, inspect_text)
    return 0


def cmd_network_rotate_key(client: Client, args: argparse.Namespace) -> None:
    net = client.rotate_key(args.name)
    emit(args, net, lambda n: f"network {n['name']}: new key epoch {n['key_epoch']} (every host sends with it "
                              "after the switch delay)")


def key_text(net: dict[str, Any]) -> list[str]:
    if not net.get("encrypted"):
        return ["encrypted: no"]
    if net.get("key_epoch") is None:
        return ["encrypted: yes, but this host holds no key yet (it sends and accepts nothing)"]
    lines = [f"encrypted: yes, key epoch {net['key_epoch']} (age {human_duration(net['key_age_s'])}), "
             f"sending with epoch {net['tx_epoch']}"]
    for sa in (net.get("keys") or {}).get("sas", []):
        lines.append(f"  {sa['dir']:<3} peer {sa['peer']} epoch {sa['epoch']} spi {sa['spi']} "
                     f"key {sa['key']} salt {sa['salt']}")
    return lines


def human_duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def inspect_text(net: dict[str, Any]) -> str:
    lines = [f"{key}: {net[key]}" for key in ("name", "vni", "subnet", "mtu", "gateway", "owner") if key in net]
    lines += key_text(net)
    attached = net.get("attached", [])
    lines.append(f"endpoints on this host: {len(attached)}")
    if attached:
        lines.append(endpoint_rows(attached))
    return "\n".join(lines)


def cmd_network_rm(client: Client, args: argparse.Namespace) -> None:
    client.delete_network(args.name, force=args.force)
    emit(args, {"removed": args.name}, lambda d: f"network {d['removed']} removed")


def default_names(netns: str) -> list[str]:
    """A bare namespace name (`ip netns add web`) names the endpoint `web` in DNS, if it is a valid name."""
    if "/" in netns:
        return []
    try:
        return [validate_dns_name(netns)]
    except BadRequest:
        return []


def cmd_attach(client: Client, args: argparse.Namespace) -> None:
    names = args.name if args.name else ([] if args.no_name else default_names(args.netns))
    ep = client.create_endpoint(args.network, netns=args.netns, ifname=args.ifname, ip=args.ip, mac=args.mac,
                                names=names or None)
    emit(args, ep, lambda e: f"attached {args.netns} to {e['network']}: endpoint {e['id'][:12]} "
                             f"ip {e['ip']}/{e['prefixlen']} mac {e['mac']} ({e['ifname']}, mtu {e['mtu']})"
                             + (f", names {', '.join(e['names'])}" if e.get("names") else ""))


def cmd_endpoint_name(client: Client, args: argparse.Namespace) -> None:
    ep = client.set_endpoint_names(args.id, args.names)
    emit(args, ep, lambda e: f"endpoint {e['id'][:12]} ({e['ip']}) names: {', '.join(e['names']) or '(none)'}")


def cmd_detach(client: Client, args: argparse.Namespace) -> None:
    ep = client.detach(args.network, args.netns)
    emit(args, ep, lambda e: f"detached {args.netns} from {e['network']} (endpoint {e['id'][:12]}, ip {e['ip']})")


def endpoint_rows(eps: list[dict[str, Any]]) -> str:
    return render_table(
        ["ID", "NETWORK", "IP", "MAC", "IFNAME", "NETNS", "NAMES", "HOST"],
        [[e["id"][:12], e["network"], f"{e['ip']}/{e['prefixlen']}", e["mac"], e["ifname"],
          e.get("netns") or "-", ",".join(e.get("names") or []) or "-", e.get("host", "")] for e in eps],
    )


def cluster_endpoint_rows(eps: list[dict[str, Any]]) -> str:
    return render_table(
        ["ID", "NETWORK", "IP", "MAC", "NAMES", "HOST", "VTEP"],
        [[e["id"][:12], e["network"], f"{e['ip']}/{e['prefixlen']}", e["mac"], ",".join(e.get("names") or []) or "-",
          e.get("host", ""), e.get("vtep", "")] for e in eps],
    )


def unknown_endpoint_lines(unknown: list[dict[str, Any]]) -> str:
    """Endpoints whose state file was unreadable and that could not be rebuilt: what to do about each."""
    return "\n".join(f"UNKNOWN endpoint {u['id'][:12]} (network {u.get('network') or '?'}, veth {u['host_ifname']}): "
                     f"{u['hint']}" for u in unknown)


def cmd_endpoint_ls(client: Client, args: argparse.Namespace) -> None:
    if args.all:
        emit(args, client.list_endpoints(args.network, everywhere=True), cluster_endpoint_rows)
        return
    emit(args, client.list_endpoints(args.network), endpoint_rows)
    unknown = [u for u in client.status().get("endpoints_unknown") or []
               if args.network is None or u.get("network") in (None, args.network)]
    if unknown and not args.json:
        print(unknown_endpoint_lines(unknown))


def cmd_endpoint_rm(client: Client, args: argparse.Namespace) -> None:
    client.delete_endpoint(args.id)
    if not args.json:
        print(f"removed endpoint {args.id}")


def cmd_members(client: Client, args: argparse.Namespace) -> None:
    def rows(members: list[dict[str, Any]]) -> str:
        now = time.time()
        return render_table(
            ["NAME", "ADDRESS", "STATE", "INCARNATION", "LAST CHANGE"],
            [[m["name"], f"{m['addr']}:{m['port']}", m["state"], m["incarnation"],
              f"{max(0.0, now - m['last_change']):.1f}s ago"] for m in members],
        )

    emit(args, client.members(), rows)


def cmd_fdb(client: Client, args: argparse.Namespace) -> None:
    def text(d: dict[str, Any]) -> str:
        prog = d["programmed"]
        if not d["local_endpoints"]:
            return f"network {d['network']} has no endpoint on this host: nothing is programmed here"
        lines = [f"network {d['network']} (vni {d['vni']}): programmed on this host"]
        lines.append(render_table(["MAC", "VTEP"], [[e["mac"], e["vtep"]] for e in prog["fdb"]]))
        lines.append(render_table(["IP", "MAC"], [[e["ip"], e["mac"]] for e in prog["neigh"]]))
        lines.append("flood list: " + (", ".join(prog["flood"]) or "(empty)"))
        if prog != d["desired"]:
            lines.append("note: differs from the desired entries; the next reconciliation repairs it")
        return "\n".join(lines)

    emit(args, client.network_fdb(args.network), text)


def port_drops_text(d: dict[str, Any]) -> str:
    """The first-hop guard's drops (both dataplanes): one line per network, reasons with counts."""
    names = d.get("names") or {}
    lines = []
    for vni, drops in sorted((d.get("port_drops") or {}).items(), key=lambda kv: int(kv[0])):
        nonzero = ", ".join(f"{k}={human_count(v)}" for k, v in sorted(drops.items()) if v) or "-"
        lines.append(f"port drops {names.get(vni) or '?'} (vni {vni}): {nonzero}")
    return "\n".join(lines)


def stats_text(d: dict[str, Any]) -> str:
    guard = port_drops_text(d)
    kernel_mode = d.get("dataplane") != "userspace"
    if kernel_mode and not d.get("networks"):
        return ("dataplane kernel: no network with an endpoint on this host, so no VXLAN device to count\n"
                f"VXLAN packets from non-members dropped: {human_count(d.get('vxlan_non_member_drops', 0))}"
                + ("\n" + guard if guard else ""))
    names = d.get("names") or {}
    rows = []
    for vni, c in sorted((d.get("networks") or {}).items(), key=lambda kv: int(kv[0])):
        drops = {k: v for k, v in c.items() if ("drop" in k or "error" in k or "bad" in k) and v}
        rows.append([names.get(str(vni)) or "?", vni,
                     human_count(c.get("tx_packets", 0)), human_bytes(c.get("tx_bytes", 0)),
                     human_count(c.get("rx_packets", 0)), human_bytes(c.get("rx_bytes", 0)),
                     ", ".join(f"{k}={human_count(v)}" for k, v in sorted(drops.items())) or "-"])
    text = render_table(["NETWORK", "VNI", "TX PACKETS", "TX BYTES", "RX PACKETS", "RX BYTES", "DROPS"], rows)
    glob = {k: v for k, v in (d.get("global") or {}).items() if v}
    if kernel_mode:  # the rows are the VXLAN devices' own counters; the filter's drops are host-wide
        glob["vxlan_non_member_drops"] = d.get("vxlan_non_member_drops", 0)
        glob["vxlan_peer_bum_drops"] = d.get("vxlan_peer_bum_drops", 0)
    text += "\n" + "global: " + (", ".join(f"{k}={human_count(v)}" for k, v in sorted(glob.items())) or "-")
    return text + ("\n" + guard if guard else "")


def cmd_stats(client: Client, args: argparse.Namespace) -> None:
    emit(args, client.stats(), stats_text)


def keys_text(d: dict[str, Any]) -> str:
    if not d["encrypted"]:
        return "gossip is not encrypted (overlayd runs with --plaintext)"
    lines = [f"key file: {d['key_file']}"]
    lines.append(render_table(["KEY ID", "PRIMARY"], [[k["id"], "yes" if k["primary"] else ""] for k in d["keys"]]))
    return "\n".join(lines)


def read_key(source: str) -> str:
    """The key from stdin (`-`) or a file, so it never shows in `ps` or the shell's history; a
    literal base64 key is still accepted."""
    if source == "-":
        text = sys.stdin.readline()
    elif os.path.isfile(source):
        try:
            with open(source) as f:
                text = f.readline()
        except OSError as e:
            raise UsageError(f"cannot read key file {source}: {e.strerror}") from None
    else:
        text = source
    key = text.strip()
    if not key:
        raise UsageError(f"no key in {'stdin' if source == '-' else source}: expected one base64 key "
                         "(as `overlayctl keys generate` prints it)")
    return key


def cmd_keys(client: Client, args: argparse.Namespace) -> None:
    if args.keys_command == "generate":
        from overlaynet.gossip.keyring import generate_key

        print(base64.b64encode(generate_key()).decode())
    elif args.keys_command == "ls":
        emit(args, client.keys(), keys_text)
    else:
        result = client.key_op(args.keys_command, read_key(args.key))
        emit(args, result, lambda d: f"key {args.keys_command}: {'done' if d['changed'] else 'nothing to change'}"
                                     f" (sent to every member)\n" + keys_text(d))


def health_lines(health: dict[str, Any]) -> list[str]:
    lines = [f"health: {health['status']}"]
    lines += [f"  - {reason}" for reason in health.get("reasons", [])]
    return lines


def status_text(s: dict[str, Any]) -> str:
    lines = health_lines(s["health"]) if "health" in s else []
    keys = ("name", "node_id", "version", "advertise", "vxlan_port", "gossip_port", "dataplane", "underlay_mtu",
            "state_dir", "networks", "endpoints", "uptime_s")
    lines += [f"{k}: {s[k]}" for k in keys if k in s]
    if "cluster" in s:
        c = s["cluster"]
        lines.append(f"cluster: {c['members']} members ({c['alive']} alive, {c['suspect']} suspect, "
                     f"{c['dead']} dead or left)")
    if "keyring" in s:
        k = s["keyring"]
        lines.append(f"gossip encryption: {'on, ' + str(len(k['keys'])) + ' key(s)' if k['encrypted'] else 'OFF'}")
    dp = s.get("dataplane_status") or {}
    if dp.get("offloads"):
        lines.append("fast path offloads: " + ", ".join(f"{k}={v}" for k, v in sorted(dp["offloads"].items())))
    if dp.get("error"):
        lines.append(f"fast path error: {dp['error']}")
    if s.get("endpoints_unknown"):
        lines.append(unknown_endpoint_lines(s["endpoints_unknown"]))
    if "tables" in s:
        lines.append("tables: " + ", ".join(f"{name} {n}" for name, n in s["tables"].items()))
    counters = s.get("counters") or {}
    if counters:
        lines.append("programming: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    for what, error in sorted((s.get("program_failures") or {}).items()):
        lines.append(f"programming error ({what}): {error}")
    last = s.get("last_reconcile") or {}
    if last:
        lines.append(f"last reconcile: {time.time() - last.get('at', 0):.0f}s ago, {last.get('duration_ms')} ms, "
                     f"repaired {last.get('repaired', 0)}, forgotten {last.get('forgotten', 0)}, "
                     f"stale removed {last.get('stale_removed', 0)}, errors {len(last.get('errors', []))}")
        lines += [f"reconcile error: {e}" for e in last.get("errors", [])]
    dns = s.get("dns") or {}
    if dns:
        lines.append(f"dns: {len(dns.get('servers', []))} server(s), {dns.get('queries', 0)} queries, "
                     f"{dns.get('errors', 0)} errors")
        if dns.get("last_error"):
            lines.append(f"dns last error: {dns['last_error']}")
    return "\n".join(lines)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    """Exit 1 when the host is degraded, so scripts and systemd can act on it."""
    status = client.status()
    emit(args, status, status_text)
    return 0 if status.get("health", {}).get("status") == "ok" else 1


# ---- parser ----------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a hint), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


NETNS_HELP = "a name under /run/netns, or a path such as /proc/PID/ns/net"


def add_attach_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ifname", help="interface name inside the namespace (default eth0)")
    p.add_argument("--ip", help="ask for this address (default: the next free one)")
    p.add_argument("--mac", help="ask for this MAC (default: derived from the endpoint id)")
    p.add_argument("--name", "--alias", dest="name", action="append", metavar="NAME",
                   help="a DNS name for the endpoint, answered on every host (repeatable; default: NETNS "
                        "when it is a bare name under /run/netns)")
    p.add_argument("--no-name", action="store_true", help="no DNS name, not even the default")


def doctor_text(d: dict[str, Any]) -> str:
    lines = [f"{d['host']} ({d['advertise']}), underlay MTU {d['underlay_mtu']}"]
    if not d["peers"]:
        lines.append("no other cluster member to check")
    else:
        lines.append(render_table(
            ["PEER", "VTEP", "GOSSIP", "VXLAN", "PATH MTU", "MAX VXLAN PAYLOAD", "MAX INNER MTU"],
            [[p["name"], p["vtep"], f"tcp/{p['gossip']['port']} {p['gossip']['result']}",
              f"udp/{p['vxlan']['port']} {p['vxlan']['result']}", p["path_mtu"], p["max_vxlan_payload"],
              p["max_inner_mtu"]] for p in d["peers"]]))
    lines += [f"warning: {w}" for w in d["warnings"]]
    return "\n".join(lines)


def cmd_doctor(client: Client, args: argparse.Namespace) -> int:
    """Exit 1 when anything needs attention."""
    report = client.doctor()
    emit(args, report, doctor_text)
    return 1 if report["warnings"] else 0


def cmd_completion(client: Client, args: argparse.Namespace) -> None:
    import shtab  # only here: every other command starts without it

    print(shtab.complete(build_parser(), shell=args.shell))


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument("--socket", default=argparse.SUPPRESS,
                        help=f"overlayd API socket (default ${SOCKET_ENV} or {default_socket()})")

    parser = Parser(prog="overlayctl", description="Control overlaynet on this host.", parents=[common])
    parser.add_argument("--version", action="version", version=f"overlayctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    net = sub.add_parser("network", help="create, list, inspect and remove networks", parents=[common])
    net_sub = net.add_subparsers(dest="network_command", metavar="SUBCOMMAND", parser_class=Parser)
    net_sub.required = True
    p = net_sub.add_parser("create", help="create a network", parents=[common])
    p.add_argument("name")
    p.add_argument("--subnet", required=True, help="IPv4 CIDR, e.g. 198.19.1.0/24")
    p.add_argument("--vni", help=f"VXLAN network identifier {MIN_VNI}..{MAX_VNI} (default: derived from the name)")
    p.add_argument("--mtu", help="inner MTU (default: underlay MTU - 50)")
    p.add_argument("--gateway", help="the network's anycast gateway and DNS address, reserved "
                                     "(default: the first usable address of the subnet)")
    p.add_argument("--no-gateway", action="store_true",
                   help="no gateway address: every address is usable, but there is no DNS on the network")
    p.add_argument("--egress", action="store_true",
                   help="containers reach the outside through their own host (NAT on the underlay) and get a "
                        "default route via the gateway; also what CNI portmap needs (default: off)")
    p.add_argument("--encrypted", action="store_true",
                   help="encrypt traffic between hosts (ESP, AES-GCM), never sending it in the clear; needs "
                        "encrypted gossip and the userspace dataplane on every host with containers on it")
    p.set_defaults(func=cmd_network_create)
    p = net_sub.add_parser("ls", help="list networks", parents=[common])
    p.set_defaults(func=cmd_network_ls)
    p = net_sub.add_parser("inspect", help="show one network", parents=[common])
    p.add_argument("name")
    p.add_argument("--show-keys", action="store_true",
                   help="encrypted network: also this host's SAs with their keys and salts in hex (root only; "
                        "for decrypting captures)")
    p.set_defaults(func=cmd_network_inspect)
    p = net_sub.add_parser("rotate-key", help="give an encrypted network a new key epoch now", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_network_rotate_key)
    # docker network's own words and argument order: `connect NETWORK CONTAINER`.
    p = net_sub.add_parser("connect", help="attach NETNS to NETWORK (as `docker network connect`)", parents=[common])
    p.add_argument("network")
    p.add_argument("netns", help=NETNS_HELP)
    add_attach_options(p)
    p.set_defaults(func=cmd_attach)
    p = net_sub.add_parser("disconnect", help="detach NETNS from NETWORK (as `docker network disconnect`)",
                           parents=[common])
    p.add_argument("network")
    p.add_argument("netns")
    p.set_defaults(func=cmd_detach)
    p = net_sub.add_parser("rm", help="remove a network", parents=[common])
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="detach attached endpoints first")
    p.set_defaults(func=cmd_network_rm)

    p = sub.add_parser("attach", help="plug a network namespace into a network", parents=[common])
    p.add_argument("netns", help=NETNS_HELP)
    p.add_argument("--network", required=True)
    add_attach_options(p)
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("detach", help="unplug a network namespace from a network", parents=[common])
    p.add_argument("netns")
    p.add_argument("--network", required=True)
    p.set_defaults(func=cmd_detach)

    ep = sub.add_parser("endpoint", help="list endpoints", parents=[common])
    ep_sub = ep.add_subparsers(dest="endpoint_command", metavar="SUBCOMMAND", parser_class=Parser)
    ep_sub.required = True
    p = ep_sub.add_parser("ls", help="list endpoints on this host", parents=[common])
    p.add_argument("--network")
    p.add_argument("--all", action="store_true", help="every endpoint in the cluster, on any host")
    p.set_defaults(func=cmd_endpoint_ls)
    p = ep_sub.add_parser("name", help="set an endpoint's DNS names (replaces them; none clears)",
                          parents=[common])
    p.add_argument("id", help="endpoint id (or a unique prefix of it), see `overlayctl endpoint ls`")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=cmd_endpoint_name)
    p = ep_sub.add_parser("rm", help="remove an endpoint by id (also an `unknown` one and its veth)",
                          parents=[common])
    p.add_argument("id", help="endpoint id (or a unique prefix of it), see `overlayctl endpoint ls`")
    p.set_defaults(func=cmd_endpoint_rm)

    p = sub.add_parser("stats", help="dataplane counters per network (packets, bytes, drops by reason)",
                       parents=[common])
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("members", help="cluster members as this host sees them", parents=[common])
    p.set_defaults(func=cmd_members)

    p = sub.add_parser("fdb", help="forwarding entries this host programmed for a network", parents=[common])
    p.add_argument("network")
    p.set_defaults(func=cmd_fdb)

    keys = sub.add_parser("keys", help="the gossip keyring (rotation without restart)", parents=[common])
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", parser_class=Parser)
    keys_sub.required = True
    p = keys_sub.add_parser("ls", help="installed keys (ids only) and the primary", parents=[common])
    p.set_defaults(func=cmd_keys)
    p = keys_sub.add_parser("generate", help="print a new random key (base64); talks to nobody", parents=[common])
    p.set_defaults(func=cmd_keys)
    for op, text in (("install", "add a key on every member (decrypt only)"),
                     ("use", "make an installed key the primary everywhere (encrypt with it)"),
                     ("remove", "remove a key everywhere (not the primary)")):
        p = keys_sub.add_parser(op, help=text, parents=[common])
        p.add_argument("key", metavar="KEYFILE", help="a file holding the key in base64 (first line), or - to "
                       "read it from stdin; a literal key works too but shows in `ps` and shell history")
        p.set_defaults(func=cmd_keys)

    p = sub.add_parser("doctor", help="check the underlay to every peer: gossip and VXLAN ports, path MTU "
                       "(exit 1 on a problem)", parents=[common])
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("completion", help="print a shell completion script (see docs/cli.md to install it)")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    p.set_defaults(func=cmd_completion)

    p = sub.add_parser("status", help="this host's health (exit 1 when degraded) and daemon status",
                       parents=[common])
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    client = Client(getattr(args, "socket", None))
    try:
        code = args.func(client, args)
    except UsageError as e:
        print(f"overlayctl: error: {e}", file=sys.stderr)
        return 2
    except ApiError as e:
        print(f"overlayctl: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `overlayctl ... | head`: the reader is gone, nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
