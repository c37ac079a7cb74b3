"""Prometheus metrics of one server process, and the ASGI middleware that records them.

Each app owns its registry (two apps in one process never share counters). The middleware is
plain ASGI, not Starlette's ``BaseHTTPMiddleware``: no extra task or queue per request, only a
wrapped ``send`` to catch the status; the numbers are plain Python ints and floats turned into
metric families when Prometheus scrapes. Routes are labelled by their template
(``/v2/models/{name}/infer``), never by the raw path, so the label set stays bounded.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from modelcrate.serve.model import ModelInfo

# From 250 µs (an inline ONNX prediction) to 10 s (a large batch).
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Rows per model call and requests per model call (adaptive batching).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
UNMATCHED = "unmatched"


class _Histogram:
    """Bucket counts and a sum in plain Python numbers (one event loop: no lock needed)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as the exposition format wants them."""
        out = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(total)))
        return out


class Metrics:
    """Request count, errors, latency, in-flight requests, predicted rows, batch sizes, model
    readiness.

    The hot path only adds to plain numbers (a request costs a dict lookup, a bisect and a few
    additions, no lock); :meth:`render` turns them into Prometheus metric families at scrape
    time, next to the process metrics and the model's identity.
    """

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self._registry: CollectorRegistry | None = None  # made (and prometheus_client imported)
        # on the first scrape: start-up does not pay for it
        self.in_flight = 0
        self.rows = 0
        self.ready = False
        self._requests: dict[tuple[str, str, int], list[int]] = {}  # -> [count]
        self._latency: dict[str, _Histogram] = {}
        self.batch_rows = _Histogram(BATCH_BUCKETS)
        self.batch_requests = _Histogram(BATCH_BUCKETS)

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        count = self._requests.get(key)
        if count is None:
            count = self._requests[key] = [0]
        count[0] += 1
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = _Histogram(LATENCY_BUCKETS)
        latency.observe(seconds)

    def observe_rows(self, rows: int) -> None:
        self.rows += rows

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

            info = self.info
            reg = CollectorRegistry(auto_describe=True)
            Gauge(
                "modelcrate_model_info",
                "The served crate (always 1).",
                ["name", "version", "flavor", "runtime"],
                registry=reg,
            ).labels(info.name, info.version, info.flavor, info.runtime).set(1)
            ProcessCollector(registry=reg)
            reg.register(self)  # a collector: collect() below
            self._registry = reg
        return self._registry

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def describe(self) -> list[Any]:
        return []  # the families are known only at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        requests = CounterMetricFamily(
            "modelcrate_requests",
            "HTTP requests answered, by route template, method and status code.",
            labels=["route", "method", "status"],
        )
        errors = CounterMetricFamily(
            "modelcrate_request_errors",
            "HTTP requests answered with an error: kind is client (4xx) or server (5xx).",
            labels=["route", "kind"],
        )
        error_counts: dict[tuple[str, str], int] = {}
        for (route, method, status), (count,) in sorted(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
            if status >= 400:
                key = (route, "server" if status >= 500 else "client")
                error_counts[key] = error_counts.get(key, 0) + count
        for labels, count in sorted(error_counts.items()):
            errors.add_metric(list(labels), count)
        latency = HistogramMetricFamily(
            "modelcrate_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            labels=["route"],
        )
        for route, hist in sorted(self._latency.items()):
            latency.add_metric([route], hist.buckets(), hist.sum)
        yield from (requests, errors, latency)
        yield GaugeMetricFamily(
            "modelcrate_requests_in_flight", "HTTP requests being handled now.", self.in_flight
        )
        yield CounterMetricFamily(
            "modelcrate_predicted_rows", "Rows the model predicted (all routes).", self.rows
        )
        for name, doc, hist in (
            ("rows", "Rows per model call (requests batched together add up).", self.batch_rows),
            ("requests", "Requests per model call.", self.batch_requests),
        ):
            family = HistogramMetricFamily(f"modelcrate_batch_size_{name}", doc)
            family.add_metric([], hist.buckets(), hist.sum)
            yield family
        yield GaugeMetricFamily(
            "modelcrate_model_ready",
            "1 when the model passed its warm-up prediction.",
            1 if self.ready else 0,
        )


class MetricsMiddleware:
    """Counts and times every HTTP request; the route label is resolved after routing."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0  # none sent

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_flight += 1
        started = time.perf_counter()
        failed = True  # an exception that escapes before a response starts is a server error
        try:
            await self.app(scope, receive, send_with_status)
            failed = False
        finally:
            metrics.in_flight -= 1
            if status or failed:  # nothing sent, no error: the client left before its body
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                metrics.record(route, scope["method"], status or 500, time.perf_counter() - started)
