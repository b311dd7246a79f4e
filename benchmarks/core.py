"""The pieces every case shares: figures and their repeats, 'not available' reasons, progress lines,
and cleanup that runs even when the run is interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


class NotAvailable(Exception):
    """A case that cannot run on this checkout or machine; the message is the one-line reason."""


@dataclass
class Figure:
    """One measured quantity of one case in one mode, with every repeat kept."""

    group: str  # dataplane | control | serf | sim | micro
    case: str  # e.g. "tcp-1 mtu1450"
    mode: str  # e.g. "kernel-vxlan"
    metric: str  # e.g. "throughput"
    unit: str
    values: list[float] = field(default_factory=list)
    better: str = "higher"  # or "lower": which direction is good (for ratios and plots)
    status: str = "ok"  # ok | not available | failed
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        if self.values:
            d.update(median=self.median, min=min(self.values), max=max(self.values), n=len(self.values))
        return d


class Results:
    """All figures of a run, addressable by (group, case, mode, metric)."""

    def __init__(self) -> None:
        self.figures: dict[tuple[str, str, str, str], Figure] = {}
        self.samples: dict[str, Any] = {}  # raw distributions for plots (RTTs, per-host times, curves)

    def figure(self, group: str, case: str, mode: str, metric: str, unit: str, better: str = "higher") -> Figure:
        key = (group, case, mode, metric)
        if key not in self.figures:
            self.figures[key] = Figure(group, case, mode, metric, unit, better=better)
        return self.figures[key]

    def add(self, group: str, case: str, mode: str, metric: str, unit: str, value: float,
            better: str = "higher", **extra: Any) -> None:
        fig = self.figure(group, case, mode, metric, unit, better)
        fig.values.append(float(value))
        for k, v in extra.items():
            fig.extra.setdefault(k, []).append(v)

    def mark(self, group: str, case: str, mode: str, metric: str, unit: str, status: str, reason: str,
             better: str = "higher") -> None:
        """Record that a figure could not be measured; it stays in every table with its reason."""
        fig = self.figure(group, case, mode, metric, unit, better)
        if not fig.values:
            fig.status, fig.reason = status, reason
        else:  # some repeats worked: keep them, but say that others did not
            fig.extra.setdefault("failures", []).append(reason)

    def of_group(self, group: str) -> list[Figure]:
        return [f for f in self.figures.values() if f.group == group]


class Progress:
    """One line per step on stderr: time since the start, steps done of planned (k/N) and an ETA.

    Each case plans its steps up front with a rough cost per step (seconds, from earlier runs); the
    ETA scales the remaining planned cost by how long the finished steps really took against their
    plan, so it corrects itself on a slower or faster machine.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps_planned = 0
        self.steps_done = 0
        self.cost_planned = 0.0
        self.cost_done = 0.0

    def plan(self, steps: int, cost_each: float) -> None:
        self.steps_planned += steps
        self.cost_planned += steps * cost_each

    def step_done(self, cost: float) -> None:
        self.steps_done += 1
        self.cost_done += cost

    def _where(self, elapsed: float) -> str:
        if not self.steps_planned:
            return ""
        where = f" {min(self.steps_done, self.steps_planned)}/{self.steps_planned}"
        if self.cost_done > 0:
            remaining = max(self.cost_planned - self.cost_done, 0.0) * elapsed / self.cost_done
            where += f" ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        return where

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s{self._where(elapsed)}] {message}", file=sys.stderr, flush=True)


class Interrupted(BaseException):
    """Raised by the signal handlers so that every `finally` (namespace removal) still runs."""


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP/SIGINT unwind the stack like an exception instead of killing the process."""

    main_pid = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            # A forked helper (pyroute2 forks to create namespaces) must just die, not unwind our stack.
            os._exit(128 + signum)
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
