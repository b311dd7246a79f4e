"""A churn soak on a real lab: overlayd hosts (half userspace, half kernel) under control-plane loss,
with faults injected one after another while long-lived containers ping each other in a ring.

Faults: attach/detach, network create/delete, kill -9 of an overlayd (then restart), kill -9 of a
fastpathd, a 20 s partition of two hosts (then heal), gossip key rotation. Each fault records the
window in which the containers it touches may lose pings (its documented window); a lost ping
outside every window that touches its pair is a violation. Invariants are checked every minute
and at the end (see `Soak.check_invariants`). Results go to a JSON file and, when asked, into
docs/reliability.md between its `soak` markers.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from overlaynet import kernel
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.lab import Host, Lab, wait_until

RESYNC = 5.0
WITHDRAW_DELAY = 4.0
FAST = ["--resync-interval", str(RESYNC), "--settle-time", "0.3", "--withdraw-delay", str(WITHDRAW_DELAY)]
STEADY = "steady"
STEADY_SUBNET = "198.19.100.0/22"
CHURN_SUBNET = "198.19.104.0/22"
LOSS_PERCENT = 5
PARTITION_SECONDS = 20.0
# How long after a fault ends its pairs may still lose pings (the documented recovery time).
RECOVERY = {
    "overlayd-kill": WITHDRAW_DELAY,  # a restart inside withdraw_delay loses nothing; longer ones may
    "fastpathd-kill": RESYNC + 3.0,   # overlayd restarts fastpathd at its next call (a resync at most)
    "partition": 20.0,                # rejoin through gossip, then programming
}


@dataclass
class Fault:
    kind: str
    hosts: list[str]
    start: float
    end: float = 0.0
    detail: str = ""

    def covers(self, when: float, pair: tuple[str, str]) -> bool:
        if self.kind not in RECOVERY:
            return False  # faults with no window may cost no ping at all
        touches = bool(set(pair) & set(self.hosts))
        return touches and self.start - 1.0 <= when <= (self.end or time.time()) + RECOVERY[self.kind]


@dataclass
class Pinger:
    src_host: str
    dst_host: str
    netns: str
    dst_ip: str
    out_path: str
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Results:
    hosts: int
    userspace_hosts: int
    kernel_hosts: int
    seconds: float
    loss_percent_control_plane: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    loss_by_fault: dict[str, dict[str, int]] = field(default_factory=dict)
    pings_sent: int = 0
    pings_lost: int = 0
    pings_lost_unexplained: int = 0
    lost_pings: list[dict[str, Any]] = field(default_factory=list)  # each: pair, when, the fault blamed
    invariant_checks: list[dict[str, Any]] = field(default_factory=list)
    false_deaths: list[str] = field(default_factory=list)
    rss_kb: dict[str, list[int]] = field(default_factory=dict)
    fds: dict[str, list[int]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, lab: Lab, hosts: int, seconds: float, seed: int | None = None) -> None:
        self.lab = lab
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.hosts: list[Host] = []
        self.count = hosts
        self.kind: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.pingers: list[Pinger] = []
        self.churn: dict[str, tuple[str, str]] = {}  # netns -> (host label, network)
        self.temp_networks: list[str] = []
        self.counter = 0
        self.key_files: dict[str, str] = {}
        self.results = Results(hosts, hosts - hosts // 2, hosts // 2, seconds, LOSS_PERCENT)

    # ---- setup -----------------------------------------------------------------------------

    def start(self) -> None:
        key = base64.b64encode(os.urandom(32)).decode() + "\n"
        for i in range(self.count):
            host = self.lab.add_host(f"h{i + 1}")
            self.kind[host.label] = "userspace" if i % 2 == 0 else "kernel"
            path = os.path.join(self.lab.workdir, f"{host.label}.key")
            with open(path, "w") as f:
                f.write(key)
            os.chmod(path, 0o600)
            self.key_files[host.label] = path
            self.nft(host, f"table inet soakloss {{\n chain out {{ type filter hook output priority 0; "
                           f"oifname \"eth0\" meta l4proto {{ udp, tcp }} th dport 7946 numgen random mod 100 "
                           f"< {LOSS_PERCENT} drop; oifname \"eth0\" meta l4proto {{ udp, tcp }} th sport 7946 "
                           f"numgen random mod 100 < {LOSS_PERCENT} drop; }}\n}}\n")
            self.hosts.append(host)
        for i, host in enumerate(self.hosts):
            self.start_daemon(host, join=i > 0)
        wait_until(lambda: all(self.alive_count(h) == self.count for h in self.hosts), timeout=90,
                   what="every member alive everywhere")
        self.lab.overlayctl(self.hosts[0], "network", "create", STEADY, "--subnet", STEADY_SUBNET)
        self.lab.overlayctl(self.hosts[0], "network", "create", "churn", "--subnet", CHURN_SUBNET)
        wait_until(lambda: all({STEADY, "churn"} <= {n["name"] for n in self.lab.overlayctl_json(h, "network", "ls")}
                               for h in self.hosts), timeout=60, what="networks everywhere")
        eps = []
        for host in self.hosts:
            ns = self.lab.add_container(f"s{host.label}")
            eps.append((host, ns, self.lab.overlayctl_json(host, "attach", ns, "--network", STEADY)))
        for i, (host, ns, _ep) in enumerate(eps):
            dst_host, _dst_ns, dst_ep = eps[(i + 1) % len(eps)]
            self.lab.wait_ping(ns, dst_ep["ip"], timeout=60)
            pinger = Pinger(host.label, dst_host.label, ns, dst_ep["ip"],
                            os.path.join(self.lab.workdir, f"ping-{host.label}.log"))
            self.pingers.append(pinger)
        for pinger in self.pingers:
            with open(pinger.out_path, "wb") as out:
                pinger.process = self.lab.popen(pinger.netns, ["ping", "-D", "-O", "-n", "-i", "0.2", "-W", "1",
                                                               pinger.dst_ip], stdout=out, stderr=subprocess.STDOUT)
        self.sample_resources()

    def start_daemon(self, host: Host, join: bool = True) -> None:
        args = ["--dataplane", self.kind[host.label], "--key-file", self.key_files[host.label], *FAST]
        if join:
            args += ["--join", self.hosts[0].address if host is not self.hosts[0] else self.hosts[1].address]
        self.lab.start_daemon(host, *args, timeout=60)

    def nft(self, host: Host, script: str) -> None:
        result = self.lab.run(host.netns, ["nft", "-f", "-"], input=script)
        assert result.returncode == 0, result.stderr

    def alive_count(self, host: Host) -> int:
        return sum(1 for m in self.lab.overlayctl_json(host, "members") if m["state"] == "alive")

    # ---- faults ----------------------------------------------------------------------------

    def record(self, kind: str, hosts: list[str], started: float, detail: str = "") -> Fault:
        fault = Fault(kind, hosts, started, time.time(), detail)
        self.faults.append(fault)
        return fault

    def attach_or_detach(self) -> None:
        started = time.time()
        if self.churn and (len(self.churn) > 2 * self.count or self.rng.random() < 0.5):
            ns = self.rng.choice(sorted(self.churn))
            label, network = self.churn.pop(ns)
            host = self.lab.hosts[label]
            self.lab.overlayctl(host, "detach", ns, "--network", network)
            self.record("detach", [label], started, ns)
            return
        host = self.rng.choice(self.hosts)
        self.counter += 1
        ns = self.lab.add_container(f"c{self.counter}")
        self.lab.overlayctl(host, "attach", ns, "--network", "churn")
        self.churn[ns] = (host.label, "churn")
        self.record("attach", [host.label], started, ns)

    def network_create_delete(self) -> None:
        started = time.time()
        self.counter += 1
        name = f"tmp{self.counter}"
        host = self.rng.choice(self.hosts)
        third = 108 + self.counter % 8
        self.lab.overlayctl(host, "network", "create", name, "--subnet", f"198.19.{third}.0/24")
        ns = self.lab.add_container(f"n{self.counter}")
        self.lab.overlayctl(host, "attach", ns, "--network", name)
        self.lab.overlayctl(host, "detach", ns, "--network", name)
        self.lab.overlayctl(host, "network", "rm", name)
        self.record("network-create-delete", [host.label], started, name)

    def kill_overlayd(self) -> None:
        host = self.rng.choice(self.hosts)
        started = time.time()
        self.lab.stop_daemon(host, signal.SIGKILL)
        time.sleep(0.5)
        self.start_daemon(host)
        self.record("overlayd-kill", [host.label], started)

    def kill_fastpathd(self) -> None:
        host = self.rng.choice([h for h in self.hosts if self.kind[h.label] == "userspace"])
        started = time.time()
        UserspaceMode.stop_fastpathd(host.state_dir)
        # overlayd starts it again at its next call to it (a program pass or the resync).
        wait_until(lambda: self.fastpathd_alive(host), timeout=RESYNC * 4, what=f"fastpathd back on {host.label}")
        self.record("fastpathd-kill", [host.label], started)

    def fastpathd_alive(self, host: Host) -> bool:
        status = self.lab.overlayctl_json(host, "status")["dataplane_status"]
        return "error" not in status

    def partition(self) -> None:
        cut = self.rng.sample(self.hosts, 2)
        others = [h for h in self.hosts if h not in cut]
        peers = "{ " + ", ".join(h.address for h in others) + " }"
        started = time.time()
        for host in cut:
            self.nft(host, f"table inet soakpart {{\n chain in {{ type filter hook input priority 0; "
                           f"ip saddr {peers} drop; }}\n chain out {{ type filter hook output priority 0; "
                           f"ip daddr {peers} drop; }}\n}}\n")
        time.sleep(PARTITION_SECONDS)
        for host in cut:
            self.nft(host, "delete table inet soakpart")
        # Everyone across the cut is on the other side of a partition too.
        self.record("partition", [h.label for h in cut], started)

    def rotate_key(self) -> None:
        host = self.rng.choice(self.hosts)
        started = time.time()
        old = self.lab.overlayctl_json(host, "keys", "ls")["primary"]
        key_file = os.path.join(self.lab.workdir, "new.key")
        with open(key_file, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        self.lab.overlayctl(host, "keys", "install", key_file)
        wait_until(lambda: all(self.key_count(h) >= 2 for h in self.hosts if h.process), timeout=60,
                   what="the new key everywhere")
        self.lab.overlayctl(host, "keys", "use", key_file)
        time.sleep(2)
        keys = self.lab.overlayctl_json(host, "keys", "ls")
        old_file = os.path.join(self.lab.workdir, "old.key")
        for entry in keys["keys"]:
            if entry["id"] == old and not entry["primary"]:
                # The old key's material lives in each host's key file: remove it by the same text.
                with open(self.key_files[host.label]) as kf:
                    lines = [ln for ln in kf.read().split() if ln]
                for line in lines:
                    with open(old_file, "w") as f:
                        f.write(line + "\n")
                    result = self.lab.overlayctl(host, "keys", "remove", old_file, check=False)
                    if result.returncode == 0:
                        break
        self.record("key-rotation", [h.label for h in self.hosts], started)

    def key_count(self, host: Host) -> int:
        return len(self.lab.overlayctl_json(host, "keys", "ls")["keys"])

    # ---- invariants ------------------------------------------------------------------------

    def check_invariants(self, final: bool = False) -> dict[str, Any]:
        check: dict[str, Any] = {"at": time.time(), "final": final}
        wait_until(lambda: all(self.alive_count(h) == self.count for h in self.hosts), timeout=90,
                   what="every member alive everywhere (after the last fault)")
        # No duplicate IPs cluster-wide.
        seen: dict[tuple[str, str], str] = {}
        dupes = []
        for host in self.hosts:
            for ep in self.lab.overlayctl_json(host, "endpoint", "ls", "--all"):
                key = (ep["network"], ep["ip"])
                if seen.setdefault(key, ep["id"]) != ep["id"]:
                    dupes.append(f"{key[0]} {key[1]}: {seen[key][:12]} and {ep['id'][:12]}")
        check["duplicate_ips"] = sorted(set(dupes))
        # Programmed forwarding equals the desired one on every host, within a resync interval.
        mismatched: list[str] = []
        for host in self.hosts:
            for net in {ep["network"] for ep in self.lab.overlayctl_json(host, "endpoint", "ls")}:
                try:
                    wait_until(lambda h=host, n=net: self.programmed_matches(h, n), timeout=RESYNC * 3,
                               interval=0.5, what=f"{host.label} {net} programmed == desired")
                except TimeoutError:
                    mismatched.append(f"{host.label}/{net}")
        check["programming_mismatch"] = mismatched
        check["leaks"] = self.leaks()
        self.sample_resources()
        for what in ("duplicate_ips", "programming_mismatch", "leaks"):
            self.results.violations += [f"{what}: {v}" for v in check[what]]
        self.results.invariant_checks.append(check)
        return check

    def programmed_matches(self, host: Host, network: str) -> bool:
        fdb = self.lab.overlayctl_json(host, "fdb", network)
        return bool(fdb["programmed"] == fdb["desired"])

    def leaks(self) -> list[str]:
        found = []
        for host in self.hosts:
            eps = self.lab.overlayctl_json(host, "endpoint", "ls")
            nets = {ep["network"]: 0 for ep in eps}
            for ep in eps:
                nets[ep["network"]] += 1
            vnis = {n["name"]: n["vni"] for n in self.lab.overlayctl_json(host, "network", "ls")}
            wanted = {kernel.sandbox_path(host.state_dir, vnis[n]) for n in nets if n in vnis}
            present = set(kernel.list_sandboxes(host.state_dir))
            found += [f"{host.label}: sandbox {p}" for p in sorted(present - wanted)]
            for net, count in nets.items():
                sandbox = kernel.sandbox_path(host.state_dir, vnis[net])
                veths = len(kernel.list_endpoint_links(sandbox))
                if veths != count:
                    found.append(f"{host.label}: {veths} veths for {count} endpoints in {net}")
                device = (kernel.tap_name if self.kind[host.label] == "userspace" else kernel.vxlan_name)(vnis[net])
                if not kernel.device_exists(sandbox, device):
                    found.append(f"{host.label}: {device} missing in the sandbox of {net}")
            with open("/proc/self/mountinfo") as f:
                mounts = {line.split()[4] for line in f if line.split()[4].startswith(host.state_dir + "/")}
            found += [f"{host.label}: mount {m}" for m in sorted(mounts - wanted)]
            for dirpath, dirs, names in os.walk(host.state_dir):
                dirs[:] = [d for d in dirs if d != "netns"]
                found += [f"{host.label}: temp file {os.path.join(dirpath, n)}" for n in names if n.endswith(".tmp")]
            files = os.listdir(os.path.join(host.state_dir, "endpoints"))
            if len([f for f in files if f.endswith(".json")]) != len(eps) or any(
                    not f.endswith(".json") for f in files):
                found.append(f"{host.label}: state files {sorted(files)} for {len(eps)} endpoints")
        commands = command_lines()
        for host in self.hosts:
            daemons = [c for c in commands if "overlaynet.daemon" in c and host.state_dir in c.split()]
            if len(daemons) != 1:
                found.append(f"{host.label}: {len(daemons)} overlayd processes")
            control = os.path.join(host.state_dir, "fastpath.sock")
            fastpaths = [c for c in commands if "fastpathd" in c and control in c.split()]
            expected = 1 if self.kind[host.label] == "userspace" else 0
            if len(fastpaths) != expected:
                found.append(f"{host.label}: {len(fastpaths)} fastpathd processes (expected {expected})")
        return found

    def sample_resources(self) -> None:
        for host in self.hosts:
            if host.process is None:
                continue
            pid = host.process.pid
            try:
                with open(f"/proc/{pid}/status") as f:
                    rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, AttributeError):
                continue
            self.results.rss_kb.setdefault(host.label, []).append(rss)
            self.results.fds.setdefault(host.label, []).append(fds)

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> Results:
        actions = [self.attach_or_detach] * 4 + [self.network_create_delete, self.kill_overlayd,
                                                 self.kill_fastpathd, self.partition, self.rotate_key]
        mandatory = [self.kill_overlayd, self.kill_fastpathd, self.partition, self.rotate_key,
                     self.network_create_delete]
        started = time.monotonic()
        last_check = started
        while time.monotonic() - started < self.seconds:
            action = mandatory.pop(0) if mandatory and self.rng.random() < 0.5 else self.rng.choice(actions)
            action()
            time.sleep(self.rng.uniform(1.0, 3.0))
            if time.monotonic() - last_check >= 60:
                self.check_invariants()
                last_check = time.monotonic()
        for action in mandatory:  # a short run still sees every kind of fault once
            action()
        self.check_invariants(final=True)
        self.stop_pingers()
        self.account_pings()
        self.false_deaths()
        self.results.seconds = round(time.monotonic() - started, 1)
        self.results.faults = [asdict(f) for f in self.faults]
        return self.results

    def stop_pingers(self) -> None:
        for pinger in self.pingers:
            proc = pinger.process
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT)  # ping prints its summary and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def account_pings(self) -> None:
        table: dict[str, dict[str, int]] = {}
        for pinger in self.pingers:
            with open(pinger.out_path, errors="replace") as f:
                text = f.read()
            answered = {int(m.group(1)) for m in re.finditer(r"icmp_seq=(\d+) ttl=", text)}
            waited = {int(m.group(2)): float(m.group(1))
                      for m in re.finditer(r"\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)", text)}
            sent = max(answered | set(waited) | {0})
            self.results.pings_sent += sent
            pair = (pinger.src_host, pinger.dst_host)
            for seq, when in waited.items():
                if seq in answered:
                    continue
                self.results.pings_lost += 1
                faults = [f for f in self.faults if f.covers(when, pair)]
                key = faults[0].kind if faults else "unexplained"
                table.setdefault(key, {"lost": 0})["lost"] += 1
                self.results.lost_pings.append({"pair": f"{pair[0]}->{pair[1]}", "at": when, "fault": key,
                                                "fault_hosts": faults[0].hosts if faults else []})
                if not faults:
                    self.results.pings_lost_unexplained += 1
        for fault in self.faults:
            table.setdefault(fault.kind, {"lost": 0})
            table[fault.kind]["count"] = table[fault.kind].get("count", 0) + 1
        self.results.loss_by_fault = table
        if self.results.pings_lost_unexplained:
            self.results.violations.append(f"{self.results.pings_lost_unexplained} pings lost outside every "
                                           "fault's documented window")

    def false_deaths(self) -> None:
        for host in self.hosts:
            for m in re.finditer(r"ts=(\S+) .*event=member-dead name=(\S+)", self.lab.daemon_log(host)):
                when = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
                name = m.group(2)
                explained = any(f.kind in ("overlayd-kill", "partition") and (name in f.hosts or host.label in f.hosts)
                                and f.start - 2 <= when <= f.end + 30 for f in self.faults)
                if not explained:
                    self.results.false_deaths.append(f"{host.label} saw {name} dead at {m.group(1)}")
        self.results.violations += [f"false death: {d}" for d in self.results.false_deaths]


def command_lines() -> list[str]:
    """The command line of every process (arguments joined by spaces)."""
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
    return lines


def write_results(results: Results, json_path: str, markdown_path: str | None) -> None:
    with open(json_path, "w") as f:
        json.dump(asdict(results), f, indent=1, sort_keys=True)
    if markdown_path is None:
        return
    with open(markdown_path) as f:
        doc = f.read()
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    doc = head + start + "\n" + markdown_table(results) + end + tail
    with open(markdown_path, "w") as f:
        f.write(doc)


def markdown_table(r: Results) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Measured by `tests/soak` on {when}: {r.hosts} hosts ({r.userspace_hosts} userspace, "
             f"{r.kernel_hosts} kernel), {r.seconds:.0f} s, {r.loss_percent_control_plane}% loss on gossip "
             f"traffic; {r.pings_sent} pings in a ring of long-lived containers, {r.pings_lost} lost, "
             f"{r.pings_lost_unexplained} outside a fault's window. {len(r.invariant_checks)} invariant checks, "
             f"{len(r.violations)} violations, {len(r.false_deaths)} false deaths.", "",
             "| fault | times | pings lost | documented window |", "|---|---|---|---|"]
    windows = {"overlayd-kill": f"kill to restart + {RECOVERY['overlayd-kill']:.0f} s (withdraw delay)",
               "fastpathd-kill": f"kill to restart + {RECOVERY['fastpathd-kill']:.0f} s (next resync)",
               "partition": f"{PARTITION_SECONDS:.0f} s cut + {RECOVERY['partition']:.0f} s to rejoin",
               "unexplained": "none: must be 0"}
    for kind, row in sorted(r.loss_by_fault.items()):
        lines.append(f"| {kind} | {row.get('count', '-')} | {row['lost']} | {windows.get(kind, 'none: no loss allowed')} |")
    lines += ["", "End values of a host whose overlayd was killed are its restarted process's.", "",
              "| host | overlayd RSS start → end (KiB) | open fds start → end |", "|---|---|---|"]
    for label in sorted(r.rss_kb):
        rss, fds = r.rss_kb[label], r.fds.get(label, [0])
        lines.append(f"| {label} | {rss[0]} → {rss[-1]} | {fds[0]} → {fds[-1]} |")
    return "\n".join(lines) + "\n"
