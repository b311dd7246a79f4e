"""Conventions an operator expects of every command: --version everywhere, shell completion."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from overlaynet import __version__

pytestmark = pytest.mark.unit

ENTRY_POINTS = {  # the name a user types -> the module pyproject's [project.scripts] runs
    "overlayd": "overlaynet.daemon",
    "overlayctl": "overlaynet.cli.main",
    "overlaynet-docker": "overlaynet.plugins.docker",
    "overlaynet-cni": "overlaynet.plugins.cni",
    "fastpathd": "overlaynet.dataplane.fastpathd",
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_says_its_version(name):
    result = subprocess.run([sys.executable, "-m", ENTRY_POINTS[name], "--version"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{name} {__version__}"), result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_is_valid_and_knows_the_commands(tmp_path):
    result = subprocess.run([sys.executable, "-m", "overlaynet.cli.main", "completion", "bash"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    script = tmp_path / "overlayctl.bash"
    script.write_text(result.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # Completing `overlayctl network c` offers connect and create.
    probe = (f"source {script}; COMP_WORDS=(overlayctl network c); COMP_CWORD=2; COMP_LINE='overlayctl network c'; "
             "COMP_POINT=${#COMP_LINE}; _shtab_overlayctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    offered = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60).stdout.split()
    assert {"connect", "create"} <= set(offered), offered


def test_runtime_never_imports_the_lab_or_the_demo():
    """lab.py and demo.py are tooling: no daemon, client or plugin module may depend on them."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "overlaynet"
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if path.name not in ("lab.py", "demo.py")
                 and re.search(r"^\s*(from overlaynet(\.lab|\.demo| import (lab|demo))\b|import overlaynet\.(lab|demo))",
                               path.read_text(), re.M)]
    assert offenders == []
