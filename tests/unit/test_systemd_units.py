"""The shipped systemd units (contrib/systemd): readiness, kill mode, and no mount sandboxing."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
# Each of these gives the service a private mount namespace: the sandbox netns bind mounts made
# there would vanish with the daemon instead of outliving it.
MOUNT_SANDBOXING = ("PrivateMounts", "PrivateTmp", "PrivateDevices", "ProtectSystem", "ProtectHome",
                    "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "MountFlags")


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def test_overlayd_unit_waits_for_readiness_and_keeps_fastpathd():
    service = unit("overlayd.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["KillMode"] == "process"  # fastpathd and containers' networking outlive a stop
    assert int(service["WatchdogSec"]) > 0
    assert "overlayd" in service["ExecStart"]


def test_plugin_unit_comes_after_overlayd_and_before_docker():
    u = unit("overlaynet-docker.service")["Unit"]
    assert "overlayd.service" in u["After"] and "docker.service" in u["Before"]


@pytest.mark.parametrize("name", ["overlayd.service", "overlaynet-docker.service"])
def test_no_private_mount_namespace(name):
    text = (UNITS / name).read_text()
    settings = [line.split("=", 1)[0].strip() for line in text.splitlines()
                if "=" in line and not line.lstrip().startswith("#")]
    assert not set(settings) & set(MOUNT_SANDBOXING)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["overlayd.service", "overlaynet-docker.service"])
def test_systemd_accepts_the_unit(name, tmp_path):
    # The binaries are not installed here: point ExecStart at one that is, keep everything else.
    text = (UNITS / name).read_text()
    text = text.replace("/usr/local/bin/overlayd", "/bin/true").replace("/usr/local/bin/overlaynet-docker", "/bin/true")
    (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if name in line and "docker.service" not in line and "podman.service" not in line]
    assert result.returncode == 0 or not problems, result.stderr
    assert not problems, result.stderr
