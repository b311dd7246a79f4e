"""Encrypted networks' control side on real overlayd processes, each host in its own namespace: the
flag and the key epochs replicate, secrets live only in the 0600 state dir and in encrypted gossip,
a host that cannot encrypt refuses with one line, key material is for root only.
(The wire itself: test_encryption_wire.py.)"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from overlaynet.cli.main import main as overlayctl_main
from overlaynet.lab import Lab, wait_until
from tests.support.as_nobody import run_as_nobody
from tests.support.cluster import FAST, host_key_file, start_cluster, write_key
from tests.support.engines import http_unix
from tests.support.esp_capture import inspect_network, key_epoch

pytestmark = pytest.mark.cluster


def one_line_error(result) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def epochs_everywhere(lab: Lab, hosts, network: str) -> set:
    return {key_epoch(lab, h, network) for h in hosts}


def secret_file(host, network: str) -> str:
    return os.path.join(host.state_dir, "netkeys", f"{network}.json")


# ---- control plane -------------------------------------------------------------------------


def test_encrypted_flag_and_key_epochs_replicate_and_secrets_stay_in_the_0600_state_dir(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    h1, h2, h3 = hosts
    net = lab.overlayctl_json(h1, "network", "create", "blue", "--subnet", "198.19.60.0/24", "--encrypted")
    assert net["encrypted"] is True and net["key_epoch"] == 1
    assert net["mtu"] == 1408  # 1500 - VXLAN 50 - ESP 42 (no padding at this size): docs/encryption.md
    wait_until(lambda: all(key_epoch(lab, h, "blue") == 1 for h in hosts), timeout=60,
               what="encrypted network with epoch 1 on every host")
    assert all(inspect_network(lab, h, "blue")["encrypted"] for h in hosts)
    text = lab.overlayctl(h2, "network", "inspect", "blue").stdout
    assert re.search(r"encrypted: yes, key epoch 1 \(age \d+m\d\ds\)", text), text

    wait_until(lambda: all(os.path.exists(secret_file(h, "blue")) for h in hosts), timeout=60, what="secrets mirrored")
    contents = set()
    for h in hosts:
        path = secret_file(h, "blue")
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, oct(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as f:
            data = json.load(f)
        assert [e["epoch"] for e in data["epochs"]] == [1] and len(bytes.fromhex(data["epochs"][0]["secret"])) == 32
        contents.add(data["epochs"][0]["secret"])
        with open(os.path.join(h.state_dir, "networks", "blue.json")) as f:
            assert "secret" not in f.read()  # the network record carries the flag, never the key
    assert len(contents) == 1  # one secret, the same everywhere

    # Rotate from another host: epoch 2 everywhere, 1 kept for the overlap; a second rotation drops 1.
    assert lab.overlayctl_json(h3, "network", "rotate-key", "blue")["key_epoch"] == 2
    wait_until(lambda: epochs_everywhere(lab, hosts, "blue") == {2}, timeout=60, what="epoch 2 everywhere")
    lab.overlayctl(h1, "network", "rotate-key", "blue")
    wait_until(lambda: epochs_everywhere(lab, hosts, "blue") == {3}, timeout=60, what="epoch 3 everywhere")

    def mirrored_epochs(h) -> list:
        with open(secret_file(h, "blue")) as f:
            return [e["epoch"] for e in json.load(f)["epochs"]]
    wait_until(lambda: all(mirrored_epochs(h) == [2, 3] for h in hosts), timeout=60, what="epochs 2 and 3 mirrored")

    # The flag is immutable: there is no way to change it, and a plain network is refused a rotation.
    lab.overlayctl(h1, "network", "create", "plain", "--subnet", "198.19.61.0/24")
    line = one_line_error(lab.overlayctl(h1, "network", "rotate-key", "plain", check=False))
    assert "not encrypted" in line, line

    lab.overlayctl(h2, "network", "rm", "blue")
    wait_until(lambda: not any(os.path.exists(secret_file(h, "blue")) for h in hosts), timeout=60, what="secrets removed")


def test_automatic_rotation_at_the_configured_interval(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host, "--key-file", write_key(lab), *FAST, "--key-rotation-interval", "3")
    lab.overlayctl(host, "network", "create", "blue", "--subnet", "198.19.62.0/24", "--encrypted")
    wait_until(lambda: (key_epoch(lab, host, "blue") or 0) >= 3, timeout=60, what="two automatic rotations")


def test_plaintext_gossip_refuses_encrypted_networks(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host, "--plaintext", *FAST)
    line = one_line_error(lab.overlayctl(host, "network", "create", "blue", "--subnet", "198.19.63.0/24",
                                         "--encrypted", check=False))
    assert "--plaintext" in line and "encrypted gossip" in line, line


def test_a_kernel_mode_host_refuses_to_attach_to_an_encrypted_network(lab):
    h1, h2 = start_cluster(lab, 2, write_key(lab), extra=[[], ["--dataplane", "kernel"]])
    lab.overlayctl(h1, "network", "create", "blue", "--subnet", "198.19.64.0/24", "--encrypted")
    wait_until(lambda: key_epoch(lab, h2, "blue") == 1, timeout=60, what="network on the kernel-mode host")
    c = lab.add_container("c")
    line = one_line_error(lab.overlayctl(h2, "attach", c, "--network", "blue", check=False))
    assert "kernel dataplane" in line and "rfc4106(gcm(aes))" in line and "userspace" in line, line
    assert lab.overlayctl_json(h2, "endpoint", "ls") == []
    assert lab.run(c, ["ip", "-o", "link", "show", "eth0"]).returncode != 0  # nothing was plugged in


# Loaded by the daemon's interpreter at start (site.py): the ESP codec fails to load as it does when
# libcrypto.so is missing from the host, whatever else is installed.
NO_LIBCRYPTO = """
import importlib.abc, sys
class NoLibcrypto(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "overlaynet.dataplane.esp":
            raise ImportError("libcrypto.so.3: cannot open shared object file: No such file or directory")
sys.meta_path.insert(0, NoLibcrypto())
"""


def test_a_host_whose_crypto_library_is_missing_refuses_to_attach(lab):
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    key = write_key(lab)
    lab.start_daemon(h1, "--key-file", host_key_file(lab, h1, key), *FAST)
    hook = os.path.join(lab.workdir, "no-libcrypto")
    os.makedirs(hook)
    with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
        f.write(NO_LIBCRYPTO)
    lab.start_daemon(h2, "--key-file", host_key_file(lab, h2, key), *FAST, "--join", h1.address,
                     env={"PYTHONPATH": hook})
    lab.overlayctl(h1, "network", "create", "blue", "--subnet", "198.19.59.0/24", "--encrypted")
    wait_until(lambda: key_epoch(lab, h2, "blue") == 1, timeout=60, what="network and key on h2")
    c = lab.add_container("c")
    line = one_line_error(lab.overlayctl(h2, "attach", c, "--network", "blue", check=False))
    assert "crypto library is missing" in line and "libcrypto" in line, line
    assert lab.overlayctl_json(h2, "endpoint", "ls") == []
    attach_ok = lab.overlayctl(h1, "attach", lab.add_container("d"), "--network", "blue", check=False)
    assert attach_ok.returncode == 0, attach_ok.stderr  # the host with its library attaches


def test_a_host_whose_esp_port_is_taken_refuses_to_attach(lab):
    """Another IPsec daemon holding UDP 4500: fastpathd starts without ESP, overlayd says so."""
    host = lab.add_host("h1")
    holder = lab.popen(host.netns, [sys.executable, "-c", "import socket, time\n"
                                    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                    "s.bind(('0.0.0.0', 4500)); print('bound', flush=True); time.sleep(600)"],
                       stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        lab.start_daemon(host, "--key-file", write_key(lab), *FAST)
        lab.overlayctl(host, "network", "create", "blue", "--subnet", "198.19.58.0/24", "--encrypted")
        line = one_line_error(lab.overlayctl(host, "attach", lab.add_container("c"), "--network", "blue",
                                             check=False))
        assert "no ESP socket" in line and "4500" in line, line
        lab.overlayctl(host, "network", "create", "plain", "--subnet", "198.19.57.0/24")
        lab.overlayctl(host, "attach", lab.add_container("d"), "--network", "plain")  # plain ones still work
    finally:
        holder.kill()
        holder.wait()


def test_show_keys_is_root_only_in_the_cli_and_the_api(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host, "--key-file", write_key(lab), *FAST)
    lab.overlayctl(host, "network", "create", "blue", "--subnet", "198.19.65.0/24", "--encrypted")

    code, err = run_as_nobody(lambda: overlayctl_main(["--socket", host.socket, "network", "inspect", "blue",
                                                       "--show-keys"]))
    assert code == 1 and err.strip() == "overlayctl: --show-keys prints secret key material: run it as root", err

    # Even with the socket opened up to everyone (a mistake an operator can make), the API keeps
    # key material for root; the rest of the network's view stays readable.
    for path in (lab.workdir, os.path.dirname(host.socket)):
        os.chmod(path, 0o711)
    os.chmod(host.socket, 0o666)

    def as_nobody(path: str) -> int:
        status, body = http_unix(host.socket, "GET", path)
        print(status, body.decode(), file=sys.stderr)
        return 0
    _, err = run_as_nobody(lambda: as_nobody("/v1/networks/blue/keys"))
    assert err.startswith("403 ") and "only root" in err, err
    _, err = run_as_nobody(lambda: as_nobody("/v1/networks/blue"))
    assert err.startswith("200 "), err
    status, body = http_unix(host.socket, "GET", "/v1/networks/blue/keys")  # root
    assert status == 200 and json.loads(body)["network"] == "blue", body
