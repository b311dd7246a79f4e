"""Operating overlayd on a host: Prometheus metrics, health, and systemd's readiness protocol.

Real daemons in a lab, real traffic between two hosts, a real fastpathd killed, a real unix
datagram socket standing in for systemd.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overlaynet.agent.config import DEFAULT_METRICS_ADDRESS
from overlaynet.agent.userspace_mode import UserspaceMode
from overlaynet.lab import Lab, wait_until

pytestmark = pytest.mark.integration

FAST = ["--resync-interval", "6", "--settle-time", "0.3", "--withdraw-delay", "2"]
METRICS = f"http://{DEFAULT_METRICS_ADDRESS}"


@pytest.fixture(scope="module")
def lab(prefix):
    with Lab(prefix=f"{prefix}o") as lab:
        yield lab


@pytest.fixture(scope="module")
def pair(lab):
    """Two joined hosts, a network, a container on each that pinged the other."""
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, "--plaintext", *FAST)
    lab.start_daemon(h2, "--plaintext", "--join", h1.address, *FAST)
    wait_until(lambda: len([m for m in lab.overlayctl_json(h1, "members") if m["state"] == "alive"]) == 2,
               what="two members alive")
    lab.overlayctl(h1, "network", "create", "ops", "--subnet", "198.19.50.0/24")
    a, b = lab.add_container("a"), lab.add_container("b")
    lab.overlayctl(h1, "attach", a, "--network", "ops", "--ip", "198.19.50.10")
    lab.overlayctl(h2, "attach", b, "--network", "ops", "--ip", "198.19.50.20")
    lab.wait_ping(a, "198.19.50.20", timeout=30)
    return h1, h2


def scrape(lab, host, address: str = METRICS) -> dict[str, list]:
    status, body = lab.http_get(host.netns, f"{address}/metrics")
    assert status == 200, body
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples, name, **labels) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert matching, f"no {name} with {labels}; have {[s.labels for s in samples.get(name, [])]}"
    return sum(matching)


def test_metrics_scrape_parses_and_counts_real_traffic(lab, pair):
    h1, h2 = pair
    lab.overlayctl(h1, "status", check=False)  # one API request at least, to be counted
    m = scrape(lab, h1)
    # Dataplane: the pings went through h1's fast path, under the network's name.
    assert value(m, "overlaynet_dataplane_packets_total", network="ops", direction="tx") > 0
    assert value(m, "overlaynet_dataplane_packets_total", network="ops", direction="rx") > 0
    assert value(m, "overlaynet_dataplane_bytes_total", network="ops", direction="tx") > 0
    assert value(m, "overlaynet_dataplane_drops_total", network="ops", reason="bad_sender") == 0
    assert value(m, "overlaynet_dataplane_drops_total", network="", reason="unknown_vni") >= 0
    assert value(m, "overlaynet_dataplane_up") == 1
    # The kernel filters' drops too: the first-hop guard's, per network and reason.
    assert value(m, "overlaynet_dataplane_drops_total", network="ops", reason="guard_mac_spoof") == 0
    # Gossip, tables, programming, reconcile, DNS, API, process.
    assert value(m, "overlaynet_gossip_members", state="alive") == 2
    assert value(m, "overlaynet_gossip_messages_total", direction="in") > 0
    assert value(m, "overlaynet_gossip_bytes_total", direction="out") > 0
    assert value(m, "overlaynet_gossip_auth_failures_total") == 0
    assert value(m, "overlaynet_gossip_push_pulls_total") >= 0  # periodic (every ~30 s): present, maybe 0
    assert value(m, "overlaynet_table_records", table="endpoints") == 2
    assert value(m, "overlaynet_table_rows_unreadable", table="endpoints") == 0
    assert value(m, "overlaynet_program_passes_total") > 0
    assert value(m, "overlaynet_program_errors_total") == 0
    assert value(m, "overlaynet_reconcile_duration_seconds_count") >= 1
    assert value(m, "overlaynet_reconcile_errors_total") == 0
    assert value(m, "overlaynet_dns_queries_total", result="answered") >= 0
    assert value(m, "overlaynet_api_requests_total", route="status", method="GET", code="200") >= 1
    assert value(m, "overlaynet_health_degraded") == 0
    assert value(m, "process_resident_memory_bytes") > 1e6
    assert value(m, "process_cpu_seconds_total") > 0


def test_stats_show_network_names_and_human_units(lab, pair):
    h1, _ = pair
    text = lab.overlayctl(h1, "stats").stdout
    header, row = text.splitlines()[:2]
    assert header.split()[:2] == ["NETWORK", "VNI"]
    assert row.split()[0] == "ops"
    assert "B" in row or "KiB" in row  # bytes in units
    raw = lab.overlayctl_json(h1, "stats")
    assert all(isinstance(c["tx_bytes"], int) for c in raw["networks"].values())
    assert "ops" in raw["names"].values()


def test_healthz_degraded_while_fastpathd_is_down_and_ok_after_recovery(lab, pair):
    h1, _ = pair
    assert lab.http_get(h1.netns, f"{METRICS}/healthz") == (200, "ok\n")
    assert lab.overlayctl_json(h1, "status")["health"] == {"status": "ok", "reasons": []}
    pid_file = os.path.join(h1.state_dir, "fastpath.pid")

    def degraded():
        status, body = lab.http_get(h1.netns, f"{METRICS}/healthz")
        return (status, body) if status == 503 else None

    # The reconciler restarts fastpathd within seconds; observations made while it did so are
    # thrown away (its pid file changed) and the outage is made again.
    for _ in range(5):
        killed = open(pid_file).read()
        UserspaceMode.stop_fastpathd(h1.state_dir)  # SIGKILL
        try:
            status, body = wait_until(degraded, timeout=10, what="/healthz degraded")
        except TimeoutError:
            assert open(pid_file).read() != killed, "fastpathd stayed down but /healthz never said so"
            continue  # restarted before we looked
        m = scrape(lab, h1)  # a scrape shows the gap, and does not hide it by starting fastpathd itself
        out = lab.overlayctl(h1, "status", check=False)
        if open(pid_file).read() == killed:
            break
        wait_until(lambda: lab.http_get(h1.netns, f"{METRICS}/healthz")[0] == 200, timeout=30, what="recovered")
    assert body.startswith("degraded\n") and "fastpathd is down" in body, body
    assert value(m, "overlaynet_dataplane_up") == 0 and value(m, "overlaynet_health_degraded") == 1
    # overlayctl status says so first, and exits 1 (scripts and systemd can use it).
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == "health: degraded"
    assert "fastpathd is down" in out.stdout.splitlines()[1]
    # The next reconciliation (every 6 s here) starts fastpathd again, with its tables.
    wait_until(lambda: lab.http_get(h1.netns, f"{METRICS}/healthz") == (200, "ok\n"), timeout=30,
               what="/healthz ok again")
    assert lab.overlayctl(h1, "status", check=False).returncode == 0


def test_health_degraded_when_the_only_peer_dies(lab, pair):
    h1, h2 = pair
    lab.stop_daemon(h2, sig=9)
    try:
        def degraded():
            health = lab.overlayctl_json(h1, "status")["health"]
            return health if health["status"] == "degraded" else None

        health = wait_until(degraded, timeout=30, what="h1 degraded after h2 died")
        assert any("no live peer" in r for r in health["reasons"]), health
        assert lab.http_get(h1.netns, f"{METRICS}/healthz")[0] == 503
    finally:
        lab.start_daemon(h2)
    wait_until(lambda: lab.overlayctl_json(h1, "status")["health"]["status"] == "ok", timeout=30,
               what="h1 ok after h2 came back")


def test_ready_status_watchdog_and_stopping_reach_notify_socket(lab, tmp_path):
    host = lab.add_host("sd")
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    messages: list[str] = []

    def received_until(text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(text in m for m in messages):
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert any(text in m for m in messages), (text, messages)

    try:
        lab.start_daemon(host, "--plaintext", "--metrics-address", "", "--resync-interval", "600", wait=False,
                         env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        received_until("READY=1")
        ready = next(m for m in messages if "READY=1" in m)
        # READY comes once the API answers: nothing more to wait for.
        assert lab.overlayctl(host, "status", check=False).stdout.startswith("health:")
        assert "STATUS=" in ready and f"MAINPID={host.process.pid}" in ready
        assert any(m.startswith("STATUS=restoring") for m in messages[:messages.index(ready)])
        received_until("WATCHDOG=1")
        assert "STATUS=ok: serving" in ready
        # Health shows in `systemctl status`: a degraded host says why in its STATUS= line (no
        # reconciliation within the test restarts fastpathd: the interval is 600 s).
        UserspaceMode.stop_fastpathd(host.state_dir)
        received_until("STATUS=degraded: fastpathd is down")
        lab.stop_daemon(host)
        received_until("STOPPING=1")
    finally:
        lab.stop_daemon(host)
        sock.close()
        os.unlink(path)


def test_keys_never_reach_the_logs_and_json_logs_parse(lab, tmp_path):
    host = lab.add_host("keys")
    lab.start_daemon(host, "--log-level", "debug", "--log-format", "json", "--metrics-address", "")
    try:
        first = open(os.path.join(host.state_dir, "gossip.key")).read().strip()
        new = lab.overlayctl(host, "keys", "generate").stdout.strip()
        key_file = tmp_path / "new.key"
        key_file.write_text(new + "\n")
        lab.overlayctl(host, "keys", "install", str(key_file))  # from a file: not on the command line
        use = subprocess.run([sys.executable, "-m", "overlaynet.cli.main", "--socket", host.socket,
                              "keys", "use", "-"], input=new + "\n", capture_output=True, text=True, timeout=60)
        assert use.returncode == 0, use.stderr
        ring = lab.overlayctl_json(host, "keys", "ls")
        assert len(ring["keys"]) == 2 and ring["keys"][0]["primary"]
        bad = subprocess.run([sys.executable, "-m", "overlaynet.cli.main", "--socket", host.socket,
                              "keys", "install", "-"], input="not a key\n", capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "base64" in bad.stderr
        lab.overlayctl(host, "keys", "remove", first)
    finally:
        lab.stop_daemon(host)
    logs = {"overlayd": lab.daemon_log(host), "fastpathd": open(os.path.join(host.state_dir, "fastpath.log")).read()}
    for name, text in logs.items():
        assert text.strip(), name
        for key in (first, new):
            raw = base64.b64decode(key)
            for form in (key, raw.hex(), key.rstrip("=")[:16]):
                assert form not in text, f"{name} log holds a key"
        for line in text.splitlines():
            record = json.loads(line)  # every line is one JSON object
            assert {"ts", "level", "logger"} <= set(record), line


def test_doctor_finds_the_peer_behind_a_1400_byte_link(lab, pair):
    """h1 and h3 on 1500-byte links, h4 behind a 1400-byte one: doctor on h1 measures each path."""
    h1, _ = pair
    h3, h4 = lab.add_host("h3"), lab.add_host("h4", mtu=1400)
    for host in (h3, h4):
        lab.start_daemon(host, "--plaintext", "--join", h1.address, "--metrics-address", "", *FAST)
    try:
        wait_until(lambda: {m["name"] for m in lab.overlayctl_json(h1, "members") if m["state"] == "alive"}
                   >= {"h3", "h4"}, timeout=30, what="h3 and h4 alive")
        out = lab.overlayctl(h1, "doctor", check=False)
        assert out.stdout, out.stderr
        report = json.loads(lab.overlayctl(h1, "doctor", "--json", check=False).stdout)
        peers = {p["name"]: p for p in report["peers"]}
        assert peers["h3"]["path_mtu"] == 1500 and peers["h3"]["max_vxlan_payload"] == 1464
        assert peers["h4"]["path_mtu"] == 1400
        assert peers["h4"]["max_vxlan_payload"] == 1364 and peers["h4"]["max_inner_mtu"] == 1350
        for name in ("h3", "h4"):
            assert peers[name]["gossip"]["result"] == "ok"
            assert peers[name]["vxlan"]["result"].startswith("ok")
        # The network "ops" (MTU 1450) cannot cross to h4 unfragmented: said, and exit 1.
        assert out.returncode == 1
        assert any("network ops has MTU 1450" in w and "h4" in w for w in report["warnings"]), report["warnings"]
        assert not any("h3" in w for w in report["warnings"])
        row = next(line for line in out.stdout.splitlines() if line.startswith("h4"))
        assert "1400" in row and "1364" in row and "1350" in row
        # A peer whose daemon is gone: its gossip port refuses.
        lab.stop_daemon(h3)
        report = json.loads(lab.overlayctl(h1, "doctor", "--json", check=False).stdout)
        h3_check = next(p for p in report["peers"] if p["name"] == "h3")
        assert h3_check["gossip"]["result"] != "ok"
        assert any("h3: gossip port" in w for w in report["warnings"])
    finally:
        lab.stop_daemon(h3)
        lab.stop_daemon(h4)


def test_health_degraded_when_a_host_gossips_with_a_key_we_do_not_share(lab, tmp_path):
    """k2 holds another cluster key than k1: its join fails, and k1 says why instead of staying `ok`."""
    k1, k2 = lab.add_host("k1"), lab.add_host("k2")
    other_key = tmp_path / "other.key"
    other_key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    other_key.chmod(0o600)
    lab.start_daemon(k1, "--metrics-address", "")
    try:
        assert lab.overlayctl_json(k1, "status")["health"]["status"] == "ok"
        lab.start_daemon(k2, "--key-file", str(other_key), "--join", k1.address, "--metrics-address", "")

        def degraded():
            health = lab.overlayctl_json(k1, "status")["health"]
            return health if health["status"] == "degraded" else None

        health = wait_until(degraded, timeout=30, what="k1 degraded by unauthenticated gossip")
        assert any("failed authentication" in r and "keys install" in r for r in health["reasons"]), health
    finally:
        lab.stop_daemon(k2)
        lab.stop_daemon(k1)


_SQUAT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("bound", flush=True)
time.sleep(600)
"""


def test_health_degraded_while_dns_cannot_bind_and_ok_once_it_can(lab):
    from overlaynet import kernel

    host = lab.add_host("dns")
    lab.start_daemon(host, "--plaintext", "--metrics-address", "", *FAST)
    squatter = None
    try:
        net = lab.overlayctl_json(host, "network", "create", "dnsnet", "--subnet", "198.19.80.0/24")
        lab.overlayctl(host, "attach", lab.add_container("dnsc"), "--network", "dnsnet")
        assert lab.overlayctl_json(host, "status")["health"]["status"] == "ok"
        lab.stop_daemon(host)  # the sandbox stays; its DNS port is free until overlayd is back
        sandbox = kernel.sandbox_path(host.state_dir, net["vni"])
        squatter = subprocess.Popen(["nsenter", f"--net={sandbox}", sys.executable, "-c", _SQUAT, net["gateway"]],
                                    stdout=subprocess.PIPE, text=True)
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        lab.start_daemon(host)

        def degraded():
            health = lab.overlayctl_json(host, "status")["health"]
            return health if health["status"] == "degraded" else None

        health = wait_until(degraded, timeout=30, what="degraded while port 53 is taken")
        assert any(r.startswith("DNS for network dnsnet is not serving") for r in health["reasons"]), health
        text = lab.overlayctl(host, "status", check=False).stdout  # every error it holds, in words
        assert "dns last error: dnsnet: cannot listen on" in text, text
        squatter.kill()
        squatter.wait()
        wait_until(lambda: lab.overlayctl_json(host, "status")["health"]["status"] == "ok", timeout=30,
                   what="ok once DNS could bind")
    finally:
        if squatter is not None and squatter.poll() is None:
            squatter.kill()
            squatter.wait()
        lab.stop_daemon(host)


def test_kernel_dataplane_counts_traffic_per_network(lab):
    """The kernel dataplane has no fast path: its per-network counters are the VXLAN devices'."""
    k3, k4 = lab.add_host("kd1"), lab.add_host("kd2")
    lab.start_daemon(k3, "--plaintext", "--dataplane", "kernel", "--metrics-address", "127.0.0.1:7948", *FAST)
    lab.start_daemon(k4, "--plaintext", "--dataplane", "kernel", "--join", k3.address, "--metrics-address", "", *FAST)
    try:
        wait_until(lambda: sum(m["state"] == "alive" for m in lab.overlayctl_json(k3, "members")) == 2,
                   timeout=30, what="two kernel-mode members")
        lab.overlayctl(k3, "network", "create", "kern", "--subnet", "198.19.90.0/24")
        a, b = lab.add_container("ka"), lab.add_container("kb")
        lab.overlayctl(k3, "attach", a, "--network", "kern", "--ip", "198.19.90.10")
        lab.overlayctl(k4, "attach", b, "--network", "kern", "--ip", "198.19.90.20")
        lab.wait_ping(a, "198.19.90.20", timeout=30)
        m = scrape(lab, k3, "http://127.0.0.1:7948")
        assert value(m, "overlaynet_dataplane_packets_total", network="kern", direction="tx") > 0
        assert value(m, "overlaynet_dataplane_packets_total", network="kern", direction="rx") > 0
        assert value(m, "overlaynet_dataplane_drops_total", reason="bad_sender") == 0
        raw = lab.overlayctl_json(k3, "stats")
        [counters] = raw["networks"].values()
        assert counters["tx_bytes"] > 0
        row = lab.overlayctl(k3, "stats").stdout.splitlines()[1]
        assert row.split()[0] == "kern"
    finally:
        lab.stop_daemon(k4)
        lab.stop_daemon(k3)


def test_sighup_moves_the_metrics_address_and_switches_the_log_format(lab):
    host = lab.add_host("hup")
    config = os.path.join(lab.workdir, "hup.toml")
    with open(config, "w") as f:
        f.write('plaintext = true\nmetrics_address = "127.0.0.1:7951"\n')
    lab.start_daemon(host, "--config", config)
    try:
        assert lab.http_get(host.netns, "http://127.0.0.1:7951/healthz") == (200, "ok\n")
        with open(config, "w") as f:
            f.write('plaintext = true\nmetrics_address = "127.0.0.1:7952"\nlog_format = "json"\n')
        host.process.send_signal(signal.SIGHUP)
        wait_until(lambda: lab.http_get(host.netns, "http://127.0.0.1:7952/healthz") == (200, "ok\n"),
                   timeout=15, what="metrics on the new address")
        assert lab.http_get(host.netns, "http://127.0.0.1:7951/healthz")[0] == 0  # the old one is closed
        assert host.process.poll() is None
        last = wait_until(lambda: next((line for line in reversed(lab.daemon_log(host).splitlines())
                                        if "metrics-moved" in line), None), timeout=10, what="move logged")
        assert json.loads(last)["address"] == "127.0.0.1:7952"  # and logged in the new format
    finally:
        lab.stop_daemon(host)
