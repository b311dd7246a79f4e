"""overlaynet/malloc.py on this machine's real glibc: counted with glibc's own malloc_stats()."""

from __future__ import annotations

import subprocess
import sys

# Threads that allocate at the same time, each holding what it allocated (blocks above Python's
# small-object size go to malloc), then glibc's per-arena report on stderr.
PROGRAM = """
import ctypes, sys, threading
from overlaynet import malloc
if sys.argv[1] == "limit":
    assert malloc.limit_arenas(1)
start = threading.Barrier(4)
held = []
def work():
    start.wait()
    held.append([bytearray(4000) for _ in range(2000)])
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return sum(1 for line in result.stderr.splitlines() if line.startswith("Arena "))


def test_limit_arenas_keeps_allocating_threads_in_one_arena():
    assert arenas("default") > 1  # glibc's default: threads that allocate at once get arenas of their own
    assert arenas("limit") == 1


def test_release_free_memory_returns_freed_heap_pages():
    program = """
import sys
from overlaynet import malloc
def anon_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])
blocks = [bytearray(4000) for _ in range(20000)]   # ~80 MB of heap
keep = blocks[::500]                                 # a few survivors pin the heap's top
del blocks
before = anon_kib()
released = malloc.release_free_memory()
print(released, before - anon_kib())
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    released, freed_kib = result.stdout.split()
    assert released == "True"
    assert int(freed_kib) > 10_000  # most of the ~80 MB freed in the middle of the heap went back
