"""Prometheus metrics of one server process, and the ASGI middleware that records them.

Each app owns its registry (two apps in one process never share counters). The middleware is
plain ASGI, not Starlette's ``BaseHTTPMiddleware``: no extra task or queue per request, only a
wrapped ``send`` to catch the status, and labelled children cached so that the hot path does
a dict lookup and three increments. Routes are labelled by their template
(``/v2/models/{name}/infer``), never by the raw path, so the label set stays bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from modelcrate.serve.model import ModelInfo

# From 250 µs (an inline ONNX prediction) to 10 s (a large batch).
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Rows per model call and requests per model call (adaptive batching).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
UNMATCHED = "unmatched"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request count, errors, latency, in-flight requests, predicted rows, model readiness."""

    def __init__(self, info: ModelInfo) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "modelcrate_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.errors = Counter(
            "modelcrate_request_errors",
            "HTTP requests answered with an error: kind is client (4xx) or server (5xx).",
            ["route", "kind"],
            registry=reg,
        )
        self.latency = Histogram(
            "modelcrate_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "modelcrate_requests_in_flight", "HTTP requests being handled now.", registry=reg
        )
        self.rows = Counter(
            "modelcrate_predicted_rows", "Rows the model predicted (all routes).", registry=reg
        )
        self.batch_rows = Histogram(
            "modelcrate_batch_size_rows",
            "Rows per model call (requests batched together add up).",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.batch_requests = Histogram(
            "modelcrate_batch_size_requests",
            "Requests per model call.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.ready = Gauge(
            "modelcrate_model_ready",
            "1 when the model passed its warm-up prediction.",
            registry=reg,
        )
        Gauge(
            "modelcrate_model_info",
            "The served crate (always 1).",
            ["name", "version", "flavor", "runtime"],
            registry=reg,
        ).labels(info.name, info.version, info.flavor, info.runtime).set(1)
        ProcessCollector(registry=reg)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            kind = "server" if status >= 500 else "client" if status >= 400 else None
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
                self.errors.labels(route, kind) if kind else None,
            )
            self._children[key] = children
        count, latency, errors = children
        count.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def observe_rows(self, rows: int) -> None:
        self.rows.inc(rows)

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request; the route label is resolved after routing."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes before a response starts is a server error

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            metrics.record(route, scope["method"], status, time.perf_counter() - started)
