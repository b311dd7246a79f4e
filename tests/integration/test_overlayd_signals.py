"""overlayd under an operator's signals and a second daemon: reload, clean exits, one owner per state dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from overlaynet.lab import wait_until

pytestmark = pytest.mark.integration


def write_config(path: str, **values: object) -> None:
    with open(path, "w") as f:
        for key, value in values.items():
            f.write(f"{key} = {json.dumps(value)}\n")


def test_sighup_reloads_config_reopens_log_and_keeps_serving(lab):
    host = lab.add_host("h1")
    config = os.path.join(lab.workdir, "h1.toml")
    log_file = os.path.join(lab.workdir, "h1", "overlayd-file.log")
    write_config(config, log_level="info", resync_interval=600, withdraw_delay=10, log_file=log_file)
    lab.start_daemon(host, "--config", config)
    lab.overlayctl(host, "network", "create", "hup", "--subnet", "198.19.50.0/24")
    a = lab.add_container("a")
    lab.overlayctl(host, "attach", a, "--network", "hup")
    before = lab.overlayctl_json(host, "status")["last_reconcile"]["at"]

    # logrotate moves the file away, then the config changes, then SIGHUP.
    os.rename(log_file, log_file + ".1")
    write_config(config, log_level="debug", resync_interval=1, withdraw_delay=3, log_file=log_file)
    host.process.send_signal(signal.SIGHUP)

    wait_until(lambda: os.path.exists(log_file), timeout=10, what="log file reopened after SIGHUP")
    assert host.process.poll() is None, "SIGHUP must not stop overlayd"
    line = wait_until(lambda: next((x for x in open(log_file) if "event=config-reloaded" in x), None),
                      timeout=10, what="reload logged")
    assert "changed=log_level,resync_interval" in line, line
    assert "restart_needed=withdraw_delay" in line, line
    # The new resync interval is in force: full reconciliations now come every second.
    wait_until(lambda: lab.overlayctl_json(host, "status")["last_reconcile"]["at"] > before + 0.5,
               timeout=15, what="a resync at the new interval")
    # The new log level is in force (debug lines appear), in the reopened file.
    lab.overlayctl(host, "status")
    wait_until(lambda: "level=debug" in open(log_file).read(), timeout=10, what="debug lines after reload")
    assert lab.overlayctl_json(host, "status")["name"] == "h1"


def test_sighup_with_a_broken_config_keeps_the_old_one(lab):
    host = lab.add_host("h1")
    config = os.path.join(lab.workdir, "h1.toml")
    write_config(config, log_level="info")
    lab.start_daemon(host, "--config", config)
    with open(config, "w") as f:
        f.write("log_level = [oops\n")
    host.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=config-reload-failed" in lab.daemon_log(host), timeout=10, what="refusal logged")
    assert host.process.poll() is None
    line = next(x for x in lab.daemon_log(host).splitlines() if "event=config-reload-failed" in x)
    assert "kept=running-config" in line and config in line, line
    assert lab.overlayctl_json(host, "status")["name"] == "h1"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGQUIT, signal.SIGALRM])
def test_other_fatal_signals_are_logged_and_leave_no_socket(lab, sig):
    host = lab.add_host("h1")
    lab.start_daemon(host)
    code = lab.stop_daemon(host, sig)
    assert code == 128 + sig, (code, lab.daemon_log(host)[-2000:])
    log = lab.daemon_log(host)
    assert f"event=stopping reason=signal signal={signal.Signals(sig).name}" in log, log[-2000:]
    assert "event=stopped" in log
    assert not os.path.exists(host.socket), "the socket must go with the daemon"


def test_second_daemon_on_the_same_state_dir_is_refused_naming_the_holder(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host)
    other_socket = os.path.join(lab.workdir, "second.sock")
    second = lab.popen(host.netns, [sys.executable, "-m", "overlaynet.daemon", "--config", os.devnull,
                                    "--name", "h1b", "--advertise", host.address, "--gossip-port", "7950",
                                    "--vxlan-port", "4790", "--state-dir", host.state_dir,
                                    "--socket", other_socket],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        second.kill()
        second.communicate()
        pytest.fail("a second overlayd started on a state dir that another overlayd holds")
    assert second.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("overlayd: state dir") and f"overlayd pid {host.process.pid}" in lines[0], err
    assert host.state_dir in lines[0]
    assert not os.path.exists(other_socket)
    # The first one is untouched, and after it stops the state dir is free again.
    assert lab.overlayctl_json(host, "status")["name"] == "h1"
    lab.stop_daemon(host)
    lab.start_daemon(host)
