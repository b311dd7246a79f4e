"""Hole 7: DNS amplification. A container asks its gateway's DNS server with EDNS 4096 for a name
that 20 endpoints share: before the fix the answer carried every record (a 32-byte query, a
1 KB answer with 64 of them), and a flood from one source got every answer.

Now a UDP answer carries at most 16 records and fits 512 bytes without EDNS, 1232 with it (TC set
when something was left out, so resolvers retry over TCP), and each source address is rate-limited
(token bucket, counted) while other containers keep getting answers.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from overlaynet.lab import wait_until
from tests.support.cluster import FAST

pytestmark = pytest.mark.adversarial

SHARED = 20

# Inside a container: one query (EDNS size or none), prints the reply's size, TC bit and record count.
_SIZE = """
import json, socket, sys
from dnslib import EDNS0, DNSRecord
server, name, edns = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = DNSRecord.question(name, "A")
if edns: q.add_ar(EDNS0(udp_len=edns))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
query = q.pack(); s.sendto(query, (server, 53)); data = s.recv(65535)
r = DNSRecord.parse(data)
print(json.dumps({"query": len(query), "size": len(data), "tc": r.header.tc, "answers": len(r.rr)}))
"""

# Inside a container: N queries at about 1000/s (the server keeps up, so nothing is lost to a full
# socket buffer), then the replies that came back and the seconds it took.
_FLOOD = """
import socket, sys, time
from dnslib import DNSRecord
server, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.setblocking(False); replies = 0; started = time.monotonic()
def drain():
    global replies
    try:
        while True:
            s.recv(65535); replies += 1
    except BlockingIOError:
        pass
for i in range(count):
    q = DNSRecord.question("web", "A"); q.header.id = i % 65536; s.sendto(q.pack(), (server, 53))
    if i % 10 == 9:
        time.sleep(0.01); drain()
elapsed = time.monotonic() - started
deadline = time.monotonic() + 1
while time.monotonic() < deadline:
    time.sleep(0.05); drain()
print(replies, elapsed)
"""

RATE, BURST = 100, 200  # the default: queries per second per source, and twice that at once


def ask_size(lab, ns: str, server: str, name: str, edns: int) -> dict:
    result = lab.run(ns, [sys.executable, "-c", _SIZE, server, name, str(edns)], timeout=20)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_answers_are_capped_and_floods_are_rate_limited(lab):
    h1 = lab.add_host("h1")
    lab.start_daemon(h1, "--plaintext", *FAST)
    gw = lab.overlayctl_json(h1, "network", "create", "amp", "--subnet", "198.19.71.0/24")["gateway"]
    for i in range(SHARED):
        lab.overlayctl_json(h1, "attach", lab.add_container(f"w{i}"), "--network", "amp", "--name", "web")
    attacker, victim = lab.add_container("evil"), lab.add_container("good")
    for ns in (attacker, victim):
        lab.overlayctl_json(h1, "attach", ns, "--network", "amp")
    wait_until(lambda: len((lab.resolve(victim, gw, "web", tcp=True) or {}).get("answers", [])) == SHARED,
               what=f"all {SHARED} addresses over TCP")

    # Size caps: a few dozen bytes in, never more than 16 records or the allowed size out.
    plain = ask_size(lab, victim, gw, "web", 0)
    big = ask_size(lab, victim, gw, "web", 4096)
    for reply, limit in ((plain, 512), (big, 1232)):
        assert reply["answers"] <= 16 and reply["size"] <= limit, reply
        assert reply["tc"] == 1, reply  # records were left out: the resolver retries over TCP
    assert big["size"] / big["query"] < 10, big

    # A flood from one source is rate-limited; another source still gets answers meanwhile.
    before = lab.overlayctl_json(h1, "status")["dns"]
    flood = lab.popen(attacker, [sys.executable, "-c", _FLOOD, gw, "3000"], stdout=-1, text=True)
    try:
        answered = lab.resolve(victim, gw, "web", tcp=False)
        assert answered is not None and answered["rcode"] == "NOERROR", answered
        out, _ = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    replies_text, elapsed_text = out.split()
    replies, elapsed = int(replies_text), float(elapsed_text)
    after = lab.overlayctl_json(h1, "status")["dns"]
    allowed = BURST + RATE * (elapsed + 1.5)  # what the bucket may let through, generously
    assert replies <= allowed, f"{replies} of 3000 flooded queries answered in {elapsed:.1f}s"
    limited = after["rate_limited"] - before.get("rate_limited", 0)
    # Counted as they are dropped (a loaded machine may also lose some in the socket buffer).
    assert limited > 0 and replies + limited <= 3000, after
    assert lab.resolve(victim, gw, "web") is not None  # the server itself is fine


# Inside a container: open N TCP connections to the DNS server and hold them for the seconds given.
_HOLD = """
import resource, socket, sys, time
server, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
held = []
for _ in range(count):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((server, 53))
    except BlockingIOError: pass
    held.append(s)
print("holding", flush=True)
time.sleep(seconds)
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_tcp_connection_flood_cannot_take_the_daemons_file_descriptors(lab):
    h1 = lab.add_host("h1")
    lab.start_daemon(h1, "--plaintext", *FAST)
    gw = lab.overlayctl_json(h1, "network", "create", "fds", "--subnet", "198.19.77.0/24")["gateway"]
    attacker, victim = lab.add_container("evil"), lab.add_container("good")
    for ns in (attacker, victim):
        lab.overlayctl_json(h1, "attach", ns, "--network", "fds", "--name", ns.rsplit("-", 1)[-1])
    wait_until(lambda: lab.resolve(victim, gw, "good", tcp=True), what="DNS over TCP answers")
    assert h1.process is not None
    before = open_fds(h1.process.pid)
    hold = lab.popen(attacker, [sys.executable, "-u", "-c", _HOLD, gw, "3000", "20"], stdout=-1, text=True)
    try:
        assert hold.stdout is not None and hold.stdout.readline().strip() == "holding"
        time.sleep(2)  # let overlayd accept what it will
        grown = open_fds(h1.process.pid) - before
        answer = lab.resolve(victim, gw, "good", tcp=True)  # another container, over TCP, meanwhile
        status = lab.overlayctl(h1, "status", "--json", check=False)
    finally:
        hold.kill()
        hold.wait()
    assert grown < 200, f"overlayd holds {grown} more file descriptors for one container's connections"
    assert answer is not None and answer["rcode"] == "NOERROR", answer
    assert status.returncode == 0, status.stderr
    assert lab.overlayctl_json(h1, "status")["dns"]["tcp_refused"] > 0
