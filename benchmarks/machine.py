"""What the run needs installed, and a description of the machine it ran on (for the results file)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

# Debian package -> a command that proves it is installed.
TOOLS = {
    "iperf3": "iperf3",
    "netsniff-ng": "trafgen",
    "serf": "serf",
    "nftables": "nft",
    "iputils-ping": "ping",
    "iproute2": "ip",
}


def missing_tools() -> list[str]:
    return [pkg for pkg, cmd in TOOLS.items() if shutil.which(cmd) is None]


def ensure_tools(progress: Any) -> None:
    """apt-get install what is missing (root only); a clear line instead of a traceback if it fails."""
    missing = missing_tools()
    if not missing:
        return
    progress(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"benchmarks: could not install {' '.join(missing)}: "
                             f"{result.stderr.strip().splitlines()[-1:]}; install them and run again")


def ensure_matplotlib(progress: Any) -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        progress("installing matplotlib into the venv (the 'bench' extra)")
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib>=3.8,<4"],
                                capture_output=True, text=True)
        return result.returncode == 0


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "missing"


def describe() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from overlaynet import __version__

    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "overlaynet": __version__,
        "git": git.stdout.strip() + ("-dirty" if dirty.stdout.strip() else ""),
        "tools": {
            "iperf3": _version(["iperf3", "--version"]),
            "trafgen": _version(["trafgen", "-v"]),
            "serf": _version(["serf", "version"]),
            "ping": _version(["ping", "-V"]),
            "nft": _version(["nft", "--version"]),
        },
    }
