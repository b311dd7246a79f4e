"""The one exception type kernel/ raises: a message a user can act on, never a raw netlink error."""

from __future__ import annotations

import os


class KernelError(Exception):
    """A kernel operation failed; ``str(err)`` says what was wrong and what to do."""


def describe(exc: BaseException) -> str:
    """A netlink/OS error as words ("File exists"), not a tuple repr."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc)
