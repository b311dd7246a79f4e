"""Per-frame cost (ns) of VXLAN encap/decap: the Cython fast path vs the pure-Python reference; and
the per-byte cost of the ESP AEAD itself (AES-128-GCM sealing through libcrypto, in a C loop).

Measured with timeit (best of several rounds of many calls, so scheduler noise only slows rounds
down and the minimum is the cost). The Cython side is the fast path's own pure entry points,
overlaynet.dataplane.fastpath.encapsulate/decapsulate, which run the same C (fp_vxlan_header,
fp_decap) as the receive and transmit paths (looked up by name in ENTRY_POINTS below).
"""

from __future__ import annotations

import importlib
import timeit
from collections.abc import Callable
from typing import Any

from benchmarks import pyref
from benchmarks.core import Results

VNI = 4242
FRAME_SIZES = (64, 1450)
AEAD_SIZES = (64, 1400, 9000)  # VXLAN datagram bytes sealed into one ESP packet

# (operation, candidate (module, function) pairs in overlaynet.dataplane, how to call them)
ENTRY_POINTS: dict[str, list[tuple[str, str]]] = {
    "encapsulate frame": [("overlaynet.dataplane.fastpath", "encapsulate")],
    "decapsulate frame": [("overlaynet.dataplane.fastpath", "decapsulate")],
}


def find(op: str) -> tuple[Callable[..., Any] | None, str]:
    tried = []
    for mod_name, fn_name in ENTRY_POINTS[op]:
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name, None)
        except ImportError:
            fn = None
        if callable(fn):
            return fn, f"{mod_name}.{fn_name}"
        tried.append(f"{mod_name}.{fn_name}")
    return None, "none of " + ", ".join(tried) + " exists yet"


def cost_ns(call: Callable[[], Any], number: int, repeat: int) -> list[float]:
    return [t / number * 1e9 for t in timeit.repeat(call, number=number, repeat=repeat)]


Call = Callable[[], Any]


def _calls(frame: bytes, packet: bytes) -> dict[str, tuple[Call, Callable[[Callable[..., Any]], Call]]]:
    """Per operation: the reference call, and how to call a fast-path function the same way."""
    return {
        "encapsulate frame": (lambda: pyref.encapsulate(VNI, frame), lambda f: lambda: f(VNI, frame)),
        "decapsulate frame": (lambda: pyref.decapsulate(packet), lambda f: lambda: f(packet)),
    }


def run(results: Results, progress: Callable[[str], None], number: int, repeat: int) -> None:
    for size in FRAME_SIZES:
        # A real Ethernet frame: unicast MACs, IPv4 ethertype, payload up to `size` bytes.
        header = bytes.fromhex("020000000002" "020000000001" "0800")
        frame = header + bytes(i & 0xFF for i in range(size - len(header)))
        calls = _calls(frame, pyref.encapsulate(VNI, frame))
        for op, (ref_call, make_fast) in calls.items():
            case = f"{op} {size}B"
            ref = cost_ns(ref_call, number, repeat)
            for v in ref:
                results.add("micro", case, "pure-python", "cost", "ns/frame", v, "lower")
            fn, where = find(op)
            if fn is None:
                results.mark("micro", case, "cython", "cost", "ns/frame", "not available", where, "lower")
                progress(f"micro {case}: python {min(ref):.0f} ns; cython not available ({where})")
                continue
            fast_call = make_fast(fn)
            try:
                fast_call()
            except Exception as e:  # a different signature: say so, do not guess further
                results.mark("micro", case, "cython", "cost", "ns/frame", "failed",
                             f"{where}: {type(e).__name__}: {e}", "lower")
                continue
            fast = cost_ns(fast_call, number, repeat)
            for v in fast:
                results.add("micro", case, "cython", "cost", "ns/frame", v, "lower", entry_point=where)
            progress(f"micro {case}: python {min(ref):.0f} ns, cython {min(fast):.0f} ns ({where})")
    run_aead(results, progress, number, repeat)
    for fig in results.of_group("micro"):
        ref_fig = results.figures.get(("micro", fig.case, "pure-python", "cost"))
        if ref_fig and ref_fig.values and fig.values:
            fig.extra["speedup_vs_python"] = min(ref_fig.values) / min(fig.values)


def run_aead(results: Results, progress: Callable[[str], None], number: int, repeat: int) -> None:
    """ns/byte of sealing one datagram (overlaynet.dataplane.esp.EspSa.seal_loop: fp_esp_encrypt, i.e. the
    transmit path's own fp_esp_encrypt_iov, in a C loop without the GIL), so that the encrypted/plain
    gap can be split into crypto and copies."""
    try:
        from overlaynet.dataplane import esp
    except ImportError as e:
        for size in AEAD_SIZES:
            results.mark("micro", f"ESP seal AES-128-GCM {size}B", "libcrypto", "cost", "ns/byte",
                         "not available", f"overlaynet.dataplane.esp: {e}", "lower")
        return
    sa = esp.EspSa(0x1000, bytes(range(esp.KEY_LEN)), bytes(esp.SALT_LEN))
    count = max(1000, number // 10)
    for size in AEAD_SIZES:
        datagram = bytes(i & 0xFF for i in range(size))
        case = f"ESP seal AES-128-GCM {size}B"
        per_packet = [ns / count for ns in cost_ns(lambda d=datagram: sa.seal_loop(d, 1, count), 1, repeat)]
        for v in per_packet:
            results.add("micro", case, "libcrypto", "cost", "ns/byte", v / size, "lower", ns_per_packet=v)
        progress(f"micro {case}: {min(per_packet):.0f} ns/packet, {min(per_packet) / size:.3f} ns/byte")
