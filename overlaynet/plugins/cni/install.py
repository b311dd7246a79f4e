"""`overlaynet-cni install --dir /opt/cni/bin`: put a launcher named `overlaynet-cni` into a CNI bin dir.

The launcher is a tiny Python script bound to this interpreter (the venv overlaynet is installed in),
so the runtime can exec it by name from CNI_PATH whatever its own PATH and environment are.
"""

from __future__ import annotations

import argparse
import os
import sys

import overlaynet
from overlaynet.atomic import write_atomic

LAUNCHER = """#!{python}
# overlaynet CNI plugin launcher, written by `overlaynet-cni install`.
import sys
sys.path.insert(0, {root!r})
from overlaynet.plugins.cni import main
sys.exit(main())
"""


def install(directory: str, name: str = "overlaynet-cni") -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(overlaynet.__file__)))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    write_atomic(path, LAUNCHER.format(python=sys.executable, root=root).encode(), mode=0o755)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="overlaynet-cni install",
                                     description="install the overlaynet CNI plugin into a CNI bin directory")
    parser.add_argument("--dir", default="/opt/cni/bin", help="CNI bin directory (default /opt/cni/bin)")
    args = parser.parse_args(argv)
    try:
        path = install(args.dir)
    except OSError as e:
        print(f"overlaynet-cni install: cannot write to {args.dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"installed {path} (type \"overlaynet-cni\" in a CNI network config)")
    return 0
