"""Liveness, readiness and metrics endpoints (for probes and Prometheus, not for people), as
documented routes of the FastAPI app; the answers come from ``serve.handlers``.

``/healthz`` answers 200 while the process serves HTTP. ``/readyz`` answers 200 only after the
model passed its warm-up prediction, 503 with the reason otherwise. ``/metrics`` is the
Prometheus text exposition of this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse

if TYPE_CHECKING:
    from modelcrate.serve.handlers import Handlers, Reply


def to_response(reply: Reply) -> Response:
    """A handler's :class:`Reply` as a Starlette response."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reply.headers or ()}
    return Response(
        reply.body,
        status_code=reply.status,
        headers=headers,
        media_type=reply.content_type.decode("latin-1"),
    )


def add_health_routes(app: FastAPI, h: Handlers) -> None:
    @app.get("/", tags=["health"], summary="What this server serves")
    async def index() -> Response:
        return to_response(h.index())

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return to_response(h.healthz())

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the model is loaded and passed a warm-up prediction",
        responses={503: {"description": "Not ready; the body says why"}},
    )
    async def readyz() -> Response:
        return to_response(h.readyz())

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics of this process",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return to_response(h.metrics())
