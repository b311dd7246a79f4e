"""Errors a user can act on. Each carries the HTTP status the API answers with.

The message is one line that says what was wrong and what to do; front ends print it as is.
"""


class OverlayError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OverlayError):
    status = 400


class Forbidden(OverlayError):
    """The caller may not see this (e.g. key material to a non-root peer of the API socket)."""

    status = 403


class NotFound(OverlayError):
    status = 404


class Conflict(OverlayError):
    status = 409


class InsufficientStorage(OverlayError):
    """Something could not be saved (a full state dir): nothing was changed."""

    status = 507
