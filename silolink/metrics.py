"""Prometheus metrics for the daemons (coordinator and agent), on an HTTP port of their own.

gRPC calls are counted under the names stock gRPC dashboards use (go-grpc-prometheus and
py-grpc-prometheus): ``grpc_server_started_total`` and ``grpc_server_handled_total`` with
``grpc_type``, ``grpc_service``, ``grpc_method`` (and ``grpc_code``), and the histogram
``grpc_server_handling_seconds``; the process's own ``process_*`` and a ``silolink_build_info``.
"""

from __future__ import annotations

import functools
import gc
import platform
import time
from collections.abc import Callable, Sequence

from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from silolink import __version__, errors
from silolink.rpc.channels import split_address

# go-grpc-prometheus's default buckets for grpc_server_handling_seconds.
GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


@functools.lru_cache(maxsize=4096)
def grpc_labels(method: str) -> tuple[str, str, str]:
    """``(grpc_type, grpc_service, grpc_method)`` of a full method path ``/pkg.Service/Method``."""
    service, _, name = method.lstrip("/").rpartition("/")
    kind = "unary"
    try:
        found = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
        kind = {
            (False, False): "unary",
            (True, False): "client_stream",
            (False, True): "server_stream",
            (True, True): "bidi_stream",
        }[(found.client_streaming, found.server_streaming)]
    except KeyError:  # a method not in the pool (refused before routing): counted as unary
        pass
    return kind, service, name


class Metrics:
    """RPC counters and latencies, plus gauges computed when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "silolink_rpc_requests",
            "RPCs served, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "silolink_rpc_duration_seconds",
            "RPC duration (whole stream for streaming RPCs)",
            ["method"],
            registry=self.registry,
        )
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self._grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server", labels, registry=self.registry
        )
        self._grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever the outcome",
            [*labels, "grpc_code"],
            registry=self.registry,
        )
        self._grpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle each RPC (whole stream for streaming RPCs)",
            labels,
            buckets=GRPC_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Gauge(
            "silolink_build_info",
            "The silolink version running (always 1)",
            ["version", "python"],
            registry=self.registry,
        ).labels(__version__, platform.python_version()).set(1)
        self._httpd = None

    def started(self, method: str) -> None:
        self._grpc_started.labels(*grpc_labels(method)).inc()

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._requests.labels(method, code).inc()
        self._seconds.labels(method).observe(seconds)
        labels = grpc_labels(method)
        self._grpc_handled.labels(*labels, code).inc()
        self._grpc_seconds.labels(*labels).observe(seconds)

    def histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Callable[[float], None]:
        """A histogram without labels; returns its ``observe`` function."""
        return Histogram(name, documentation, buckets=buckets, registry=self.registry).observe

    def gauge(self, name: str, documentation: str, label: str, values: Callable[[], dict[str, float]]) -> None:
        """A gauge whose per-``label`` values are read from ``values()`` at scrape time."""
        self.registry.register(_Callback(GaugeMetricFamily, name, documentation, label, values))

    def gauge_family(
        self, name: str, documentation: str, labels: Sequence[str], values: Callable[[], dict[tuple[str, ...], float]]
    ) -> None:
        """A gauge with several labels, its values (by label tuple) read from ``values()`` at scrape time."""
        self.registry.register(_Family(name, documentation, tuple(labels), values))

    def counter(self, name: str, documentation: str, label: str, values: Callable[[], dict[str, float]]) -> None:
        """A counter kept elsewhere (``name`` without ``_total``), read at scrape time."""
        self.registry.register(_Callback(CounterMetricFamily, name, documentation, label, values))

    def serve(self, address: str) -> str:
        """Serve /metrics on ``address`` (port 0 for any); return the bound address."""
        host, port = split_address(address)
        try:
            self._httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise errors.Unavailable(f"cannot serve metrics on {address}: {e.strerror or e}") from None
        return f"{host}:{self._httpd.server_port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def watch_gc_pauses(metrics: Metrics) -> Callable[[], None]:
    """Time every garbage collection into ``silolink_gc_pause_seconds``: a full collection
    stops every thread, the event loop's heartbeats included, so its pauses belong beside
    their latencies. Returns the function that stops watching."""
    observe = metrics.histogram(
        "silolink_gc_pause_seconds", "Time the Python garbage collector stopped the process", GC_BUCKETS
    )
    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            observe(time.perf_counter() - started.pop())

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


class _Callback(Collector):
    def __init__(self, kind, name: str, documentation: str, label: str, values: Callable[[], dict[str, float]]):
        self._kind, self._name, self._doc, self._label, self._values = kind, name, documentation, label, values

    def collect(self):
        family = self._kind(self._name, self._doc, labels=[self._label])
        for key, value in sorted(self._values().items()):
            family.add_metric([key], value)
        yield family


class _Family(Collector):
    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], values) -> None:
        self._name, self._doc, self._labels, self._values = name, documentation, labels, values

    def collect(self):
        family = GaugeMetricFamily(self._name, self._doc, labels=list(self._labels))
        for key, value in sorted(self._values().items()):
            family.add_metric(list(key), value)
        yield family
