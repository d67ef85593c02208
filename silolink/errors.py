"""The error catalog: every failure a caller can see, as a typed exception.

Domain code raises these; the gRPC layer (``silolink.rpc.status``) maps each to its status
code and sends only the public message. Anything else that escapes a handler is reported
as INTERNAL with a reference id, and its details stay in the server's log. Clients get the
same classes back from ``silolink.rpc.status.from_rpc_error``, not bare ``grpc.RpcError``.

This module must not import grpc: logic raises these without knowing about transport.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Failure kinds, named as the gRPC status codes they map to."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    ABORTED = "ABORTED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class SiloError(Exception):
    """Base of all silolink errors. ``str(err)`` is the public, sanitized message."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, site_detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        # What only the site may see (a database's host and account, a driver's own words):
        # shown by the site's CLI and written to its log, never put in a reply.
        self.site_detail = site_detail


class InvalidArgument(SiloError):
    """The request is malformed or names something in the wrong form."""

    code = Code.INVALID_ARGUMENT


class NotFound(SiloError):
    """The named site, model, dataset, job or envelope does not exist."""

    code = Code.NOT_FOUND


class AlreadyExists(SiloError):
    """Something with that name already exists."""

    code = Code.ALREADY_EXISTS


class PermissionDenied(SiloError):
    """The caller is known but may not do this (wrong role, revoked, refused by policy)."""

    code = Code.PERMISSION_DENIED


class Unauthenticated(SiloError):
    """The caller could not be identified (no certificate, bad or used token)."""

    code = Code.UNAUTHENTICATED


class FailedPrecondition(SiloError):
    """The system is not in a state where this can be done."""

    code = Code.FAILED_PRECONDITION


class ResourceExhausted(SiloError):
    """A size limit or quota was exceeded."""

    code = Code.RESOURCE_EXHAUSTED


class Unavailable(SiloError):
    """A peer could not be reached; retrying later may work."""

    code = Code.UNAVAILABLE


class ShuttingDown(Unavailable):
    """The server is stopping; reconnect later. Expected, so logged quietly (a coordinator
    stopping closes every site's stream with it)."""

    quiet = True


class DeadlineExceeded(SiloError):
    """The operation did not finish in time."""

    code = Code.DEADLINE_EXCEEDED


class Aborted(SiloError):
    """The operation was aborted by a conflict; retrying may work."""

    code = Code.ABORTED


class Cancelled(SiloError):
    """The operation was cancelled by the caller or by shutdown."""

    code = Code.CANCELLED


class Internal(SiloError):
    """An unexpected failure; details are in the server's log under the reference id."""

    code = Code.INTERNAL


# The gRPC status code numbers, so logic can carry a failure inside a stream message
# (e.g. a command result) without importing grpc.
NUMBERS: dict[Code, int] = {
    Code.CANCELLED: 1,
    Code.INVALID_ARGUMENT: 3,
    Code.DEADLINE_EXCEEDED: 4,
    Code.NOT_FOUND: 5,
    Code.ALREADY_EXISTS: 6,
    Code.PERMISSION_DENIED: 7,
    Code.RESOURCE_EXHAUSTED: 8,
    Code.FAILED_PRECONDITION: 9,
    Code.ABORTED: 10,
    Code.INTERNAL: 13,
    Code.UNAVAILABLE: 14,
    Code.UNAUTHENTICATED: 16,
}
_BY_NUMBER = {number: code for code, number in NUMBERS.items()}


def from_number(number: int, message: str) -> SiloError:
    """The typed error for a gRPC status code number (unknown numbers are INTERNAL)."""
    return BY_CODE[_BY_NUMBER.get(number, Code.INTERNAL)](message)


BY_CODE: dict[Code, type[SiloError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Aborted,
        Cancelled,
        Internal,
    )
}
