"""Prometheus metrics for the daemons (coordinator and agent), on an HTTP port of their own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from silolink import errors
from silolink.rpc.channels import split_address


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
        self._httpd = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._requests.labels(method, code).inc()
        self._seconds.labels(method).observe(seconds)

    def histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Callable[[float], None]:
        """A histogram without labels; returns its ``observe`` function."""
        return Histogram(name, documentation, buckets=buckets, registry=self.registry).observe

    def gauge(self, name: str, documentation: str, label: str, values: Callable[[], dict[str, float]]) -> None:
        """A gauge whose per-``label`` values are read from ``values()`` at scrape time."""
        self.registry.register(_Callback(GaugeMetricFamily, name, documentation, label, values))

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


class _Callback(Collector):
    def __init__(self, kind, name: str, documentation: str, label: str, values: Callable[[], dict[str, float]]):
        self._kind, self._name, self._doc, self._label, self._values = kind, name, documentation, label, values

    def collect(self):
        family = self._kind(self._name, self._doc, labels=[self._label])
        for key, value in sorted(self._values().items()):
            family.add_metric([key], value)
        yield family
