"""glibc malloc settings for a long-running daemon, set through mallopt/malloc_trim (ctypes).

- One malloc arena for the whole process: glibc gives each thread that allocates its own arena (up
  to 8 per core), and each keeps ~1 MiB resident after its thread is idle or gone. overlayd's
  threads (the kernel worker, the short-lived namespace threads, libuv's resolver pool) hold the GIL
  for nearly all they allocate, so they gain nothing from separate arenas.
- Give back to the kernel what start-up freed (the import machinery's and the state restore's
  temporaries) instead of keeping it in the heap for the daemon's lifetime.

Both are plain memory settings: nothing else changes. Without glibc (e.g. musl) they do nothing.
Measured in docs/performance.md ("Idle memory").
"""

from __future__ import annotations

import ctypes
import functools

M_ARENA_MAX = -8  # glibc's <malloc.h>


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the symbols the process already has: its C library's among them
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(count: int = 1) -> bool:
    """At most `count` malloc arenas from now on; call before threads start. True if glibc took it."""
    libc = _glibc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, count) == 1


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (malloc_trim(0)). True if any were returned."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1
