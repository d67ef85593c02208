"""The guard for grpc.aio servers: the same authentication, permission table, error
mapping, logging and metrics as the sync guard, plus call classes.

Coroutine handlers (the control stream, health, reflection) run on the event loop. Plain
sync servicers, the kind every capability and extension writes, run on the thread pool
of their call's class, with the caller's identity copied along (``current_identity()``
works there as on the sync server) and a context object that offers the sync
``grpc.ServicerContext`` API. Each class has a limit on calls in flight; a call beyond it
is answered RESOURCE_EXHAUSTED at once, for that class only, so no number of agents or
anonymous callers can take the threads operators need.

A sync response stream hops to its pool once per message and gives the thread back
between messages, so a slow reader holds a call slot but not a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from silolink import errors
from silolink.identity import ANONYMOUS, Identity, Role
from silolink.rpc.guard import (
    Authenticator,
    PermissionTable,
    RpcObserver,
    _current_identity,
    _parser,
    admit,
    refusal,
    wrapped_once,
)

log = logging.getLogger(__name__)

# Methods anyone may call to probe a server; they get a class (and limit) of their own.
PROBE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# The class of a call by its caller's role, unless its mount names one for the method.
ROLE_CLASSES = {Role.OPERATOR: "operator", Role.AGENT: "agent", Role.LOCAL: "local", Role.ANONYMOUS: "anonymous"}
_END = object()


@dataclass(frozen=True)
class CallClass:
    """A class of calls: the threads its sync handlers run on and the calls it admits at once."""

    name: str
    threads: int
    limit: int


class CallClasses:
    """The classes of one server, with a thread pool each and their calls in flight.

    Counters are touched only on the event loop, so they need no lock.
    """

    def __init__(self, classes: list[CallClass]) -> None:
        self.spec = {c.name: c for c in classes}
        self._pools = {
            c.name: ThreadPoolExecutor(c.threads, thread_name_prefix=f"rpc-{c.name}") for c in classes if c.threads
        }
        self.active = {c.name: 0 for c in classes}
        self.refused = {c.name: 0 for c in classes}

    def enter(self, name: str) -> str:
        spec = self.spec.get(name)
        if spec is None:
            raise errors.Internal(f"no call class {name!r} on this server")
        if self.active[name] >= spec.limit:
            self.refused[name] += 1
            raise errors.ResourceExhausted(
                f"the server is busy: {spec.limit} {name} calls are already in progress; retry shortly"
            )
        self.active[name] += 1
        return name

    def leave(self, name: str) -> None:
        self.active[name] -= 1

    def pool(self, name: str) -> ThreadPoolExecutor:
        pool = self._pools.get(name)
        if pool is None:
            raise errors.Internal(f"call class {name!r} has no threads for a sync handler")
        return pool

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


class _Abort(Exception):
    """Raised by ``context.abort`` in a sync handler; the guard ends the call with it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class StreamClosed(grpc.RpcError):
    """The request stream of a sync handler ended abnormally (the caller went away)."""


class BlockingContext:
    """The sync ``grpc.ServicerContext`` API over an aio context, for handlers on a pool.

    ``abort`` raises, as on the sync server; callbacks run when the call ends, however it
    ends (they must be quick: they run on the event loop).
    """

    def __init__(self, context: grpc.aio.ServicerContext, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop
        self._callbacks: list[Callable[[], None]] = []
        self._done = False
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)

    def abort_with_status(self, status: Any) -> None:
        raise _Abort(status.code, status.details)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._done:
            return False
        self._callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return not self._done

    def auth_context(self) -> Mapping[str, Any]:
        return self._context.auth_context()

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._context.peer_identity_key()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._loop.call_soon_threadsafe(self._context.set_code, code)

    def set_details(self, details: str) -> None:
        self._details = details
        self._loop.call_soon_threadsafe(self._context.set_details, details)

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._loop.call_soon_threadsafe(self._context.set_trailing_metadata, metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def finish(self) -> None:
        """The call ended: run the callbacks (on the loop)."""
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one callback must not break the others
                log.exception("an RPC done-callback failed")


class _BlockingRequests(Iterator[Any]):
    """A sync iterator over an aio request stream, for a handler on a pool thread."""

    def __init__(self, requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop, parse: Callable) -> None:
        self._requests = requests
        self._loop = loop
        self._parse = parse

    def __next__(self) -> Any:
        future = asyncio.run_coroutine_threadsafe(_next_or_end(self._requests), self._loop)
        try:
            raw = future.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise StreamClosed() from None
        except RuntimeError as e:  # the loop is closing
            raise StreamClosed() from e
        if raw is _END:
            raise StopIteration
        return self._parse(raw)


async def _next_or_end(requests: AsyncIterator[Any]) -> Any:
    try:
        return await requests.__anext__()
    except StopAsyncIteration:
        return _END


async def _parsed(requests: AsyncIterator[Any], parse: Callable) -> AsyncIterator[Any]:
    async for raw in requests:
        yield parse(raw)


def _is_async(behavior: Callable) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


Classifier = Callable[[str, Identity, bool], str]


class AioGuard(grpc.aio.ServerInterceptor):
    """Authenticate, authorize, classify, map errors, log and measure every call."""

    def __init__(
        self,
        authenticate: Authenticator,
        permissions: PermissionTable,
        classes: CallClasses,
        observer: RpcObserver | None = None,
        method_classes: Mapping[str, str] | None = None,
        refuse_unserved: bool = False,
    ) -> None:
        self._authenticate = authenticate
        self._permissions = permissions
        self._classes = classes
        self._observer = observer
        self._method_classes = dict(method_classes or {})
        # On a server that serves only some of the API (the enrollment port): a known method
        # it does not serve is answered with the permission error, which says where to go.
        self._refuse_unserved = refuse_unserved
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            if self._refuse_unserved and self._permissions.roles(method) is not None:
                return grpc.stream_stream_rpc_method_handler(functools.partial(self._refuse, method))
            return None
        return wrapped_once(self._wrapped, method, handler, self._wrap)

    async def _refuse(self, method: str, requests: Any, context: grpc.aio.ServicerContext) -> None:
        start = time.perf_counter()
        code = "OK"
        if self._observer is not None:
            self._observer.started(method)
        try:
            admit(self._authenticate, self._permissions, method, context)
            code = "UNIMPLEMENTED"
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served on this port")
        except errors.SiloError as exc:
            status, message = refusal(method, exc)
            code = status.name
            await context.abort(status, message)
        finally:
            self._done(method, code, start)

    # -- wrapping ------------------------------------------------------------------------
    def _class_of(self, method: str, identity: Identity, streaming: bool) -> str:
        named = self._method_classes.get(method)
        if named is not None:
            return named
        if method.startswith(PROBE_PREFIXES):
            return "probe"
        name = ROLE_CLASSES.get(identity.role, "operator")
        # An agent's streams (downloads, uploads) are bulk: they must not take the threads
        # its short calls (reports, keys) need.
        if name == "agent" and streaming:
            return "bulk"
        return name

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # We parse requests ourselves so a malformed one is INVALID_ARGUMENT, not gRPC's INTERNAL.
        parse = _parser(method, handler.request_deserializer)
        handler = handler._replace(request_deserializer=None)
        streaming = handler.request_streaming or handler.response_streaming
        if handler.unary_unary:
            behavior, field = handler.unary_unary, "unary_unary"
        elif handler.unary_stream:
            behavior, field = handler.unary_stream, "unary_stream"
        elif handler.stream_unary:
            behavior, field = handler.stream_unary, "stream_unary"
        else:
            behavior, field = handler.stream_stream, "stream_stream"
        args = (method, behavior, parse, handler.request_streaming, streaming)
        if inspect.isasyncgenfunction(behavior) or (handler.response_streaming and not _is_async(behavior)):
            wrapper = self._streaming(*args)
        else:
            wrapper = self._unary(*args)
        return handler._replace(**{field: wrapper})

    def _enter(self, method: str, context: Any, streaming: bool) -> str:
        if self._observer is not None:
            self._observer.started(method)
        identity = admit(self._authenticate, self._permissions, method, context)
        return self._classes.enter(self._class_of(method, identity, streaming))

    def _unary(self, method, behavior, parse, request_streaming, streaming) -> Callable:
        """A call answered once: a coroutine, or a sync function run on the class's pool.
        (Coroutine handlers that write a stream with ``context.write`` come here too.)"""
        is_async = _is_async(behavior)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, outcome, entered = time.perf_counter(), ["OK"], None
            _current_identity.set(ANONYMOUS)
            blocking = None
            try:
                entered = self._enter(method, context, streaming)
                if is_async:
                    message = _parsed(request, parse) if request_streaming else parse(request)
                    return await behavior(message, context)
                loop = asyncio.get_running_loop()
                blocking = BlockingContext(context, loop)
                run = self._sync_call(behavior, parse, request, request_streaming, blocking, loop)
                future = loop.run_in_executor(self._classes.pool(entered), contextvars.copy_context().run, run)
                # The slot is given back when the thread is, even if the caller left first.
                name, entered = entered, None
                future.add_done_callback(lambda _: self._classes.leave(name))
                return await future
            except asyncio.CancelledError:
                outcome[0] = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                await self._abort(method, context, exc, outcome)
            finally:
                if entered is not None:
                    self._classes.leave(entered)
                if blocking is not None:
                    blocking.finish()
                self._done(method, outcome[0], start)

        return wrapper

    def _streaming(self, method, behavior, parse, request_streaming, streaming) -> Callable:
        """A response stream: an async generator, or a sync generator stepped on the pool."""
        is_async = _is_async(behavior)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, outcome, entered = time.perf_counter(), ["OK"], None
            _current_identity.set(ANONYMOUS)
            blocking = generator = step = None
            loop = asyncio.get_running_loop()
            try:
                entered = self._enter(method, context, streaming)
                if is_async:
                    message = _parsed(request, parse) if request_streaming else parse(request)
                    async for item in behavior(message, context):
                        yield item
                    return
                blocking = BlockingContext(context, loop)
                pool, call = self._classes.pool(entered), contextvars.copy_context().run
                run = self._sync_call(behavior, parse, request, request_streaming, blocking, loop)
                step = loop.run_in_executor(pool, call, lambda: iter(run()))
                generator = await step
                while True:
                    step = loop.run_in_executor(pool, call, next, generator, _END)
                    item = await step
                    if item is _END:
                        generator = None
                        return
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                outcome[0] = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                await self._abort(method, context, exc, outcome)
            finally:
                if blocking is not None:
                    blocking.finish()
                if entered is not None:
                    self._release(entered, generator, step, loop)
                self._done(method, outcome[0], start)

        return wrapper

    def _release(self, name: str, generator: Any, step: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Give back the slot once the sync generator is closed (after a step still running)."""
        if generator is None:
            if step is None or step.done():
                self._classes.leave(name)
            else:
                step.add_done_callback(lambda _: self._classes.leave(name))
            return
        pool = self._classes.pool(name)

        def close(_: Any = None) -> None:
            try:
                closing = loop.run_in_executor(pool, generator.close)
            except RuntimeError:  # the pool or loop is shutting down
                self._classes.leave(name)
                return
            closing.add_done_callback(lambda _: self._classes.leave(name))

        if step is None or step.done():
            close()
        else:
            step.add_done_callback(close)

    @staticmethod
    def _sync_call(behavior, parse, request, request_streaming, blocking, loop) -> Callable[[], Any]:
        if request_streaming:
            return lambda: behavior(_BlockingRequests(request, loop, parse), blocking)
        return lambda: behavior(parse(request), blocking)

    @staticmethod
    async def _abort(method: str, context: grpc.aio.ServicerContext, exc: Exception, outcome: list[str]) -> None:
        """End the call with the status ``exc`` maps to, noted in ``outcome`` (abort raises)."""
        if isinstance(exc, grpc.aio.AbortError):  # a coroutine handler ended the call itself
            raise exc
        status, message = (exc.code, exc.details) if isinstance(exc, _Abort) else refusal(method, exc)
        outcome[0] = status.name
        await context.abort(status, message)

    def _done(self, method: str, code: str, start: float) -> None:
        seconds = time.perf_counter() - start
        if self._observer is not None:
            self._observer.observe(method, code, seconds)
        log.debug("%s by %s: %s in %.1f ms", method, _current_identity.get(ANONYMOUS), code, seconds * 1000)
