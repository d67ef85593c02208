"""The guard interceptor: one place for authentication, permissions, error mapping,
access logging and metrics on every RPC of a server.

Identity comes only from the peer's certificate (or, on the agent's local API, from the
listener). Every method must appear in the permission table; a method without a rule is
refused, so a new RPC is closed until someone decides who may call it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import grpc

from silolink import errors, pki
from silolink.identity import ACCOUNT_ROLES, ANONYMOUS, Identity, Role, implied_roles
from silolink.request_limits import check_request
from silolink.rpc.status import grpc_code

log = logging.getLogger(__name__)

_current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("silolink_identity")

Authenticator = Callable[[grpc.ServicerContext], Identity]
# Decides who a certificate's holder is on this call: raises for identities the server no
# longer accepts, returns the identity to use (an operator's account with its current role).
# The second argument reads the call's metadata, for the console acting for an account.
IdentityCheck = Callable[[Identity, Callable[[], Mapping[str, str]]], Identity | None]


def current_identity() -> Identity:
    """The authenticated caller of the RPC being served on this thread."""
    try:
        return _current_identity.get()
    except LookupError:
        raise errors.Internal("no authenticated caller on this thread") from None


class RpcObserver(Protocol):
    """Receives one observation per finished RPC (for metrics)."""

    def observe(self, method: str, code: str, seconds: float) -> None: ...

    def started(self, method: str) -> None: ...


class PermissionTable:
    """Which roles may call which method (full path ``/pkg.Service/Method``)."""

    def __init__(self, rules: Mapping[str, Iterable[Role]] | None = None) -> None:
        self._rules: dict[str, frozenset[Role]] = {}
        for method, roles in (rules or {}).items():
            self.allow(method, roles)

    def allow(self, method: str, roles: Iterable[Role]) -> None:
        # A rule naming an account role admits the roles above it (viewer < operator < admin).
        self._rules[method] = implied_roles(roles)

    def roles(self, method: str) -> frozenset[Role] | None:
        return self._rules.get(method)

    def check(self, method: str, identity: Identity) -> None:
        roles = self._rules.get(method)
        if roles is None:
            log.error("no permission rule for %s; refusing it", method)
            raise errors.PermissionDenied(f"{method} is not open to any caller")
        if identity.role in roles:
            return
        if identity.role is Role.ANONYMOUS:
            raise errors.Unauthenticated(
                f"{method} needs a client certificate; connect to the mTLS listener with "
                "your site or operator credentials"
            )
        if identity.is_account:
            needed = next((r for r in ACCOUNT_ROLES if r in roles), None)  # the lowest that may
            raise errors.PermissionDenied(
                f"account {identity.name} has the {identity.role.value} role; {method.rsplit('/', 1)[-1]} needs "
                + (f"the {needed.value} role or higher; ask an admin" if needed else "a site's certificate")
            )
        raise errors.PermissionDenied(f"a caller with role {identity.role.value} may not call {method}")


def certificate_authenticator(check: IdentityCheck) -> Authenticator:
    """Read the caller from its verified client certificate; no certificate is ANONYMOUS.

    ``check`` raises (PermissionDenied) for identities the server no longer accepts, such
    as revoked sites, and may return the identity to use instead (an operator's account with
    its current role); it runs on every call.
    """

    def authenticate(context: grpc.ServicerContext) -> Identity:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert")
        if not pems:
            return ANONYMOUS
        identity = _identity_from_pem(pems[0])
        if identity is None:
            raise errors.Unauthenticated("the client certificate names no silolink site or operator")
        return check(identity, lambda: dict(context.invocation_metadata() or ())) or identity

    return authenticate


def fixed_authenticator(identity: Identity) -> Authenticator:
    """Every caller is ``identity`` (the agent's local API trusts its listener)."""
    return lambda context: identity


def _parser(method: str, deserialize: Callable | None) -> Callable[[Any], Any]:
    if deserialize is None:
        return lambda raw: raw

    def parse(raw: Any) -> Any:
        try:
            message = deserialize(raw)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise errors.InvalidArgument(f"the request to {method} is not a valid protobuf message") from None
        check_request(message)  # no NaN, infinity or uint64 beyond SQLite, in any field of any request
        return message

    return parse


def _each(parse: Callable[[Any], Any]) -> Callable[[Iterable[Any]], Iterator[Any]]:
    def parse_all(raw_items: Iterable[Any]) -> Iterator[Any]:
        for raw in raw_items:
            yield parse(raw)

    return parse_all


def _reset(token: contextvars.Token) -> None:
    try:
        _current_identity.reset(token)
    except ValueError:  # a response stream closed from another thread's context
        pass


# Large enough for every site of a big fleet plus its operators: a miss parses a certificate.
@functools.lru_cache(maxsize=65536)
def _identity_from_pem(pem: bytes) -> Identity | None:
    return pki.identity_of(pki.load_cert(pem))


def wrapped_once(cache: dict[str, tuple[Any, Any]], method: str, handler: Any, wrap: Callable[[str, Any], Any]) -> Any:
    """``wrap(method, handler)``, reused while the server hands back the same handler."""
    cached = cache.get(method)
    if cached is not None and cached[0] is handler:
        return cached[1]
    wrapped = wrap(method, handler)
    cache[method] = (handler, wrapped)
    return wrapped


def admit(authenticate: Authenticator, permissions: PermissionTable, method: str, context: Any) -> Identity:
    """Authenticate the caller of ``method``, make it the current identity, check its rule."""
    identity = authenticate(context)
    _current_identity.set(identity)
    permissions.check(method, identity)
    return identity


def refusal(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and public message a failed call ends with; logs the details.

    Domain errors keep their code and message; anything else is INTERNAL with a reference
    id that points to the traceback in the server log.
    """
    who = _current_identity.get(ANONYMOUS)
    if isinstance(exc, errors.SiloError):
        status = grpc_code(exc)
        level = logging.ERROR if exc.code is errors.Code.INTERNAL else logging.WARNING
        log.log(level, "%s by %s refused: %s %s", method, who, status.name, exc.message)
        return status, exc.message
    ref = uuid.uuid4().hex[:12]
    log.error("%s by %s failed unexpectedly (ref %s)", method, who, ref, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the server log"


class GuardInterceptor(grpc.ServerInterceptor):
    """Authenticate, authorize, map errors, log and measure every call."""

    def __init__(
        self,
        authenticate: Authenticator,
        permissions: PermissionTable,
        observer: RpcObserver | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._permissions = permissions
        self._observer = observer
        # Wrapped handlers by method, reused while the server hands back the same handler.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return wrapped_once(self._wrapped, handler_call_details.method, handler, self._wrap)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # We parse requests ourselves so a malformed one is INVALID_ARGUMENT, not gRPC's INTERNAL.
        parse = _parser(method, handler.request_deserializer)
        handler = handler._replace(request_deserializer=None)
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary, parse))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._streaming(method, handler.unary_stream, parse))
        parse_each = _each(parse)
        if handler.stream_unary:
            return handler._replace(stream_unary=self._unary(method, handler.stream_unary, parse_each))
        return handler._replace(stream_stream=self._streaming(method, handler.stream_stream, parse_each))

    def _unary(self, method: str, behavior: Callable, parse: Callable) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            start, token = time.perf_counter(), _current_identity.set(ANONYMOUS)
            try:
                self._admit(method, context)
                return behavior(parse(request), context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                self._fail(method, context, exc)
            finally:
                self._done(method, context, start)
                _reset(token)

        return wrapper

    def _streaming(self, method: str, behavior: Callable, parse: Callable) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            start, token = time.perf_counter(), _current_identity.set(ANONYMOUS)
            try:
                self._admit(method, context)
                yield from behavior(parse(request), context)
            except Exception as exc:  # noqa: BLE001
                self._fail(method, context, exc)
            finally:
                self._done(method, context, start)
                _reset(token)

        return wrapper

    def _admit(self, method: str, context: grpc.ServicerContext) -> None:
        if self._observer is not None:
            self._observer.started(method)
        admit(self._authenticate, self._permissions, method, context)

    def _fail(self, method: str, context: grpc.ServicerContext, exc: Exception) -> None:
        """Abort the call with the status ``exc`` maps to (``abort`` raises)."""
        if context.code() is not None:  # the servicer already ended the call itself
            raise exc
        if isinstance(exc, grpc.RpcError) and not context.is_active():
            # Reading the request stream failed because the client cancelled or its deadline
            # passed: nobody is left to answer, and nothing failed here.
            log.info("%s by %s: the client left mid-call", method, _current_identity.get(ANONYMOUS))
            return
        context.abort(*refusal(method, exc))

    def _done(self, method: str, context: grpc.ServicerContext, start: float) -> None:
        seconds = time.perf_counter() - start
        status = context.code()
        code = "OK" if status is None else status.name
        if self._observer is not None:
            self._observer.observe(method, code, seconds)
        log.debug("%s by %s: %s in %.1f ms", method, _current_identity.get(), code, seconds * 1000)
