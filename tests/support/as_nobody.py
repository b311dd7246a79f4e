"""Run a Python callable as user `nobody` in a forked child, capturing its exit code and stderr.

The venv's interpreter lives under /root here, which `nobody` cannot execute, so a fork of the
already-running test process (modules loaded) is how we exercise the non-root paths for real.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

NOBODY = 65534


def run_as_nobody(fn: Callable[[], int]) -> tuple[int, str]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            os.dup2(write_fd, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = fn()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # report, never return into pytest in the child
            print(f"child raised {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err
