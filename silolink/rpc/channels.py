"""Client channels: mTLS to the coordinator, and the one-time CA discovery for enrollment."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from silolink import errors, pki
from silolink.rpc.status import from_rpc_error

T = TypeVar("T")

KEEPALIVE_CLIENT_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class Credentials:
    """What a client needs to reach the coordinator over mTLS."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def mtls_channel(target: str, creds: Credentials, max_message_bytes: int = 16 * 1024 * 1024) -> grpc.Channel:
    """A channel that verifies the coordinator against our CA and presents our certificate."""
    credentials = grpc.ssl_channel_credentials(creds.ca_pem, creds.key_pem, creds.cert_pem)
    return grpc.secure_channel(target, credentials, options=_options(max_message_bytes))


def tls_channel(target: str, ca_pem: bytes, max_message_bytes: int = 16 * 1024 * 1024) -> grpc.Channel:
    """A channel that verifies the server but presents no client certificate."""
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_pem), options=_options(max_message_bytes))


def _options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *KEEPALIVE_CLIENT_OPTIONS,
    ]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise errors.InvalidArgument(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def presented_chain(address: str, timeout_s: float = 10.0) -> list[bytes]:
    """The DER certificates a TLS server presents, *without* verifying them.

    Used once, at enrollment, to find the coordinator's CA certificate; the caller must
    pin it by fingerprint before trusting it (as kubeadm and step-ca do).
    """
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                # Public in Python 3.13; the same method on the internal object before.
                getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[union-attr]
                return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in getter()]  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError) as e:
        raise errors.Unavailable(f"cannot reach the coordinator's enrollment listener at {address}: {e}") from None


def pin_ca(enroll_address: str, ca_fingerprint: str) -> bytes:
    """The PEM CA certificate the listener presents whose fingerprint matches, or refuse."""
    wanted = pki.normalize_fingerprint(ca_fingerprint)
    for der in presented_chain(enroll_address):
        if "sha256:" + hashlib.sha256(der).hexdigest() == wanted:
            return ssl.DER_cert_to_PEM_cert(der).encode()
    raise errors.Unauthenticated(
        f"the server at {enroll_address} did not present a CA certificate with fingerprint {wanted}; "
        "check the fingerprint you were given. Do not continue if it is right: you may be "
        "talking to someone else."
    )


def call_enrollment_listener(enroll_address: str, ca_pem: bytes, call: Callable[[grpc.Channel], T]) -> T:
    """One call to the enrollment listener (server TLS verified against ``ca_pem``), with
    failures as silolink errors naming the listener."""
    channel = tls_channel(enroll_address, ca_pem)
    try:
        return call(channel)
    except grpc.RpcError as e:
        raise from_rpc_error(e, peer=f"the coordinator's enrollment listener at {enroll_address}") from None
    finally:
        channel.close()
