"""`make demo`: a three-host overlaynet cluster on this machine, then everything torn down.

NOT part of overlaynet's runtime (see overlaynet/lab.py); a demonstration only.

Hosts are network namespaces on an underlay bridge, each running its own overlayd, joined by
encrypted gossip; containers are namespaces plugged in with `overlayctl attach`. A network is
created once; "web" on one host and "db" on another ping each other and exchange a checksummed TCP
transfer; the members and the FDB entries gossip made overlayd program are shown.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import sys
import time
from types import FrameType

from overlaynet.cli.tables import render_table
from overlaynet.gossip.keyring import generate_key
from overlaynet.lab import Lab, wait_until

SUBNET = "198.19.42.0/24"
NETWORK = "demo"
TRANSFER_BYTES = 32 * 1024 * 1024
HOSTS = ("host-a", "host-b", "host-c")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show(result_stdout: str) -> None:
    for line in result_stdout.rstrip().splitlines():
        print(f"    {line}")


MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        # A helper process forked by a library inherited this handler: die as it would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def write_cluster_key(lab: Lab) -> str:
    """One generated key, the same file handed to every host (copy it to real hosts the same way)."""
    path = os.path.join(lab.workdir, "cluster.key")
    with open(path, "w") as f:
        f.write(base64.b64encode(generate_key()).decode() + "\n")
    os.chmod(path, 0o600)
    return path


def run_demo(lab: Lab) -> list[list[str]]:
    summary: list[list[str]] = []
    key_file = write_cluster_key(lab)
    step("three hosts (network namespaces on one underlay bridge), each running its own overlayd")
    hosts = [lab.add_host(label) for label in HOSTS]
    for i, host in enumerate(hosts):
        args = ["--key-file", key_file] + (["--join", hosts[0].address] if i else [])
        lab.start_daemon(host, *args)
        print(f"    {host.label}: underlay {host.address}, overlayd {' '.join(args[2:]) or '(first host)'}")
    dataplane = lab.overlayctl_json(hosts[0], "status")["dataplane"]
    print(f"    dataplane: {dataplane} (overlayd --dataplane kernel|userspace)")
    started = time.monotonic()
    wait_until(lambda: all(len([m for m in lab.overlayctl_json(h, "members") if m["state"] == "alive"])
                           == len(hosts) for h in hosts), 30, what="cluster membership")
    took = time.monotonic() - started
    print(f"    gossip joined all {len(hosts)} hosts in {took:.2f} s (AES-GCM with a generated cluster key)")
    summary.append(["cluster", f"{len(hosts)} hosts alive"])

    first, web_host, db_host = hosts
    step(f"on {first.label}: overlayctl network create {NETWORK} --subnet {SUBNET}")
    show(lab.overlayctl(first, "network", "create", NETWORK, "--subnet", SUBNET).stdout)
    wait_until(lambda: all(any(n["name"] == NETWORK for n in lab.overlayctl_json(h, "network", "ls"))
                           for h in hosts), 10, what="the network reaching every host")

    endpoints = {}
    for label, host in (("web", web_host), ("db", db_host)):
        netns = lab.add_container(label)
        step(f"on {host.label}: overlayctl attach {netns} --network {NETWORK} --name {label}")
        ep = lab.overlayctl_json(host, "attach", netns, "--network", NETWORK, "--name", label)
        endpoints[label] = (netns, ep)
        print(f"    {label}: eth0 {ep['ip']}/{ep['prefixlen']} mac {ep['mac']} on {host.label}")

    web_ns, web = endpoints["web"]
    db_ns, db = endpoints["db"]
    gateway = lab.overlayctl_json(first, "network", "inspect", NETWORK).get("gateway")
    step(f"from web: resolve the name \"db\" with the DNS overlayd serves on the network's gateway ({gateway})")
    answer = wait_until(lambda: lab.resolve(web_ns, gateway, "db"), 20, what="a DNS answer") if gateway else None
    resolved = (answer or {}).get("answers", [])
    print(f"    db -> {', '.join(resolved) or 'no answer'} (answered by {web_host.label}'s overlayd, "
          f"from the replicated endpoint table)")
    summary.append(["DNS: web resolves db", "ok" if resolved == [db["ip"]] else "FAILED"])

    step(f"ping from web ({web['ip']} on {web_host.label}) to db ({db['ip']} on {db_host.label})")
    reachable = lab.wait_ping(web_ns, db["ip"], timeout=20)
    print(f"    db answered {reachable:.2f} s after its attach returned")
    ping = lab.run(web_ns, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", db["ip"]])
    show(ping.stdout)
    summary.append(["ping web -> db across hosts", "ok" if ping.returncode == 0 else "FAILED"])

    step(f"TCP transfer of {TRANSFER_BYTES // (1024 * 1024)} MiB from web to db, checksummed on both ends")
    transfer = lab.tcp_transfer(web_ns, db_ns, db["ip"], TRANSFER_BYTES)
    print(f"    sent     sha256 {transfer.sent_sha256}")
    print(f"    received sha256 {transfer.received_sha256} ({transfer.received_bytes} bytes)")
    summary.append(["TCP web -> db across hosts", f"{'intact' if transfer.intact else 'CORRUPTED'}, "
                                                  f"{transfer.mbit_per_s:.0f} Mbit/s"])

    step(f"on {web_host.label}: overlayctl members")
    show(lab.overlayctl(web_host, "members").stdout)
    step(f"on {web_host.label}: overlayctl fdb {NETWORK}  (what gossip made it program in its dataplane)")
    show(lab.overlayctl(web_host, "fdb", NETWORK).stdout)
    step(f"on {first.label}: overlayctl endpoint ls --all")
    show(lab.overlayctl(first, "endpoint", "ls", "--all").stdout)
    return summary


def main() -> int:
    if os.geteuid() != 0:
        print("demo: must run as root (it creates network namespaces); try `sudo make demo`", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    lab = Lab(prefix="ovd" + secrets.token_hex(2))
    ok = False
    try:
        summary = run_demo(lab)
        ok = all(not row[1].startswith(("FAILED", "CORRUPTED")) for row in summary)
        step("summary")
        print(render_table(["CHECK", "RESULT"], summary))
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
    except Exception as e:
        print(f"\ndemo: failed: {e}", file=sys.stderr)
    finally:
        step("tearing everything down")
        lab.close()
        print(f"    done in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
