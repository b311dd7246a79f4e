"""`make demo`: overlaynet end to end on this machine, then everything torn down.

Hosts are network namespaces on an underlay bridge, each running its own overlayd; containers are
namespaces plugged in with `overlayctl attach`. The demo shows a ping and an intact TCP transfer
between "web" and "db", and what overlayd programmed.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from types import FrameType

from overlaynet.cli.tables import render_table
from overlaynet.lab import Lab

SUBNET = "198.19.42.0/24"
NETWORK = "demo"
TRANSFER_BYTES = 32 * 1024 * 1024


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show(result_stdout: str) -> None:
    for line in result_stdout.rstrip().splitlines():
        print(f"    {line}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(lab: Lab) -> list[list[str]]:
    summary: list[list[str]] = []
    step("starting overlayd on host-a (its own network namespace, state dir and API socket)")
    host = lab.add_host("host-a")
    lab.start_daemon(host)
    print(f"    host-a underlay address {host.address}, socket {host.socket}")

    step(f"overlayctl network create {NETWORK} --subnet {SUBNET}")
    show(lab.overlayctl(host, "network", "create", NETWORK, "--subnet", SUBNET).stdout)

    addresses = {}
    for label in ("web", "db"):
        netns = lab.add_container(label)
        step(f"overlayctl attach {netns} --network {NETWORK}")
        ep = lab.overlayctl_json(host, "attach", netns, "--network", NETWORK)
        addresses[label] = (netns, ep["ip"])
        print(f"    {label}: eth0 {ep['ip']}/{ep['prefixlen']} mac {ep['mac']}")

    web_ns, web_ip = addresses["web"]
    db_ns, db_ip = addresses["db"]
    step(f"ping from web ({web_ip}) to db ({db_ip})")
    ping = lab.run(web_ns, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", db_ip])
    show(ping.stdout)
    summary.append(["ping web -> db", "ok" if ping.returncode == 0 else "FAILED"])

    step(f"TCP transfer of {TRANSFER_BYTES // (1024 * 1024)} MiB from web to db, checksummed on both ends")
    transfer = lab.tcp_transfer(web_ns, db_ns, db_ip, TRANSFER_BYTES)
    print(f"    sent     sha256 {transfer.sent_sha256}")
    print(f"    received sha256 {transfer.received_sha256} ({transfer.received_bytes} bytes)")
    summary.append(["TCP web -> db", f"{'intact' if transfer.intact else 'CORRUPTED'}, "
                                     f"{transfer.mbit_per_s:.0f} Mbit/s"])

    step("overlayctl network ls / endpoint ls")
    show(lab.overlayctl(host, "network", "ls").stdout)
    show(lab.overlayctl(host, "endpoint", "ls").stdout)
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
