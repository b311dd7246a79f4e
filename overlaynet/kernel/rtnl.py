"""Short-lived rtnetlink handles bound to a netns given by path.

pyroute2's own ``IPRoute(netns=...)`` forks a helper process per socket (unsafe-ish in a
multi-threaded daemon) and, with its default flags, *creates* a missing namespace. We instead open
the netlink socket in a private thread that entered the netns, and hand its fd to IPRoute.

Inside ``batch()`` (one thread's run of several verbs, e.g. an attach: sandbox, bridge, VXLAN
device, veth) each namespace gets one handle, opened at its first use and closed when the batch
ends, instead of a private thread and a new IPRoute per verb.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

from .errors import KernelError
from .netns import call_in_netns, resolve_netns

NETLINK_ROUTE = 0


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


_batch = threading.local()  # .handles: netns path (None: the thread's own) -> IPRoute, inside batch()


@contextmanager
def batch() -> Iterator[None]:
    """Within it, rtnl() in this thread reuses one IPRoute per namespace; all are closed at its end.
    Nested batches are one batch."""
    if getattr(_batch, "handles", None) is not None:
        yield
        return
    handles: dict[str | None, IPRoute] = {}
    _batch.handles = handles
    try:
        yield
    finally:
        _batch.handles = None
        for ipr in handles.values():
            ipr.close()


@contextmanager
def rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    """An IPRoute talking to the netns at path ``netns`` (None: the calling thread's netns).

    Closed on exit (at the end of the batch inside ``batch()``), so a long-running daemon never
    accumulates sockets or event loops.
    """
    handles: dict[str | None, IPRoute] | None = getattr(_batch, "handles", None)
    if handles is not None:
        ipr = handles.get(netns)
        if ipr is None:
            ipr = handles[netns] = _open(netns)
        yield ipr
        return
    ipr = _open(netns)
    try:
        yield ipr
    finally:
        ipr.close()


def _open(netns: str | None) -> IPRoute:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # the normal case: a plain or executor thread
    else:
        raise RuntimeError("kernel verbs block: call them via loop.run_in_executor, not on the event loop")
    if netns is None:
        ipr = IPRoute()
    else:
        try:
            sock = call_in_netns(resolve_netns(netns), _netlink_socket)
        except OSError as exc:
            raise KernelError(f"cannot enter network namespace {netns}: {exc}") from None
        fd = sock.detach()
        try:
            ipr = IPRoute(fileno=fd)
        except BaseException:
            socket.close(fd)
            raise
    return ipr
