"""Map the error catalog to gRPC status codes and back."""

from __future__ import annotations

import grpc

from silolink import errors

_TO_GRPC = {code: grpc.StatusCode[code.value] for code in errors.Code}
_FROM_GRPC = {status: code for code, status in _TO_GRPC.items()}


def grpc_code(err: errors.SiloError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    return _TO_GRPC[err.code]


def error_for(status: grpc.StatusCode | None, message: str) -> errors.SiloError:
    """The typed exception for a gRPC status code and message."""
    code = _FROM_GRPC.get(status) if status is not None else None  # type: ignore[arg-type]
    return errors.BY_CODE.get(code, errors.Internal)(message)  # type: ignore[arg-type]


def from_rpc_error(err: grpc.RpcError, peer: str = "") -> errors.SiloError:
    """Turn a failed call into its typed exception, with a readable message.

    Connection failures get a message that says what was dialled; everything else keeps
    the server's (already sanitized) message.
    """
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    if code == grpc.StatusCode.UNAVAILABLE and peer:
        details = f"cannot reach {peer}: {_connection_hint(details)}"
    return error_for(code, details)


def _connection_hint(details: str) -> str:
    lowered = details.lower()
    if "certificate verify failed" in lowered or "handshake" in lowered or "ssl" in lowered:
        return (
            "the TLS handshake failed (the peer's certificate is not from the expected CA, "
            f"or ours is not accepted): {details}"
        )
    if "connection refused" in lowered or "failed to connect" in lowered:
        return f"nothing is listening there or it is not reachable ({details})"
    return details
