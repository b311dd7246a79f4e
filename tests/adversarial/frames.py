"""Raw frames sent and counted inside container namespaces (AF_PACKET on eth0): what an attacker in
a container can put on the wire, and what a victim really receives, whatever its IP stack makes of it.

The scripts run in the namespace as `python -c SCRIPT ARGS`; frames are built with scapy.
"""

from __future__ import annotations

import json
import subprocess
import sys

from overlaynet.lab import Lab

# Count, for `seconds`, the frames arriving on eth0 that contain each marker; print {marker: count}.
_COUNT = """
import json, socket, sys, time
markers = [m.encode() for m in sys.argv[2:]]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0)); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22); s.settimeout(0.2)
counts = dict.fromkeys(sys.argv[2:], 0)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        frame, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:  # our own answers (an ICMP error quotes the marker)
        continue
    for m in markers:
        if m in frame:
            counts[m.decode()] += 1
print(json.dumps(counts), flush=True)
"""

# Send frames given as hex, round-robin, `count` in all (or for `seconds` when count is 0).
_SEND = """
import socket, sys, time
count, seconds, frames = int(sys.argv[1]), float(sys.argv[2]), [bytes.fromhex(h) for h in sys.argv[3:]]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent, end = 0, time.time() + seconds
while (count and sent < count) or (not count and time.time() < end):
    try:
        s.send(frames[sent % len(frames)])
    except OSError:
        time.sleep(0.0005)  # the veth's queue is full: a flood, after all
        continue
    sent += 1
    if count:
        time.sleep(0.01)
print(sent, flush=True)
"""


class Counter:
    """A frame counter running in a namespace; `result()` waits for its window to end."""

    def __init__(self, lab: Lab, netns: str, seconds: float, *markers: str) -> None:
        self.proc = lab.popen(netns, [sys.executable, "-c", _COUNT, str(seconds), *markers],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", self.proc.stderr.read() if self.proc.stderr else line

    def result(self, timeout: float = 60.0) -> dict[str, int]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def send(lab: Lab, netns: str, frames: list[bytes], count: int = 0, seconds: float = 0.0) -> int:
    """Send `count` frames (paced, 100/s) or flood for `seconds`; returns how many left eth0."""
    result = lab.run(netns, [sys.executable, "-c", _SEND, str(count), str(seconds), *(f.hex() for f in frames)],
                     timeout=seconds + count * 0.05 + 30)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def udp(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, marker: str) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(sport=40000, dport=9)
                 / marker.encode())


def arp(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str, dst_mac: str = "ff:ff:ff:ff:ff:ff",
        op: int = 1, marker: str = "") -> bytes:
    """An ARP frame; a gratuitous one when sender_ip == target_ip. The marker rides in the padding."""
    from scapy.layers.l2 import ARP, Ether

    frame = Ether(src=src_mac, dst=dst_mac) / ARP(op=op, hwsrc=sender_mac, psrc=sender_ip, pdst=target_ip,
                                                  hwdst="00:00:00:00:00:00" if op == 1 else dst_mac)
    return bytes(frame) + marker.encode()
