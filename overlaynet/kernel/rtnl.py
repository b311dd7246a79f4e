"""Short-lived rtnetlink handles bound to a netns given by path.

pyroute2's own ``IPRoute(netns=...)`` forks a helper process per socket (unsafe-ish in a
multi-threaded daemon) and, with its default flags, *creates* a missing namespace. We instead open
the netlink socket in a private thread that entered the netns, and hand its fd to IPRoute.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

from .errors import KernelError
from .netns import call_in_netns, resolve_netns

NETLINK_ROUTE = 0


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


@contextmanager
def rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    """An IPRoute talking to the netns at path ``netns`` (None: the calling thread's netns).

    Closed on exit, so a long-running daemon never accumulates sockets or event loops.
    """
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
    try:
        yield ipr
    finally:
        ipr.close()
