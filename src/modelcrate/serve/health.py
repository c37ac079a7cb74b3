"""Liveness, readiness and metrics endpoints (for probes and Prometheus, not for people).

``/healthz`` answers 200 while the process serves HTTP. ``/readyz`` answers 200 only after the
model passed its warm-up prediction, 503 with the reason otherwise. ``/metrics`` is the
Prometheus text exposition of this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI, Response

from modelcrate.serve.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from modelcrate.serve.state import ServingState

JSON = "application/json"


def add_health_routes(app: FastAPI, state: ServingState) -> None:
    info = state.info
    live = orjson.dumps({"status": "ok"})

    @app.get("/", tags=["health"], summary="What this server serves")
    async def index() -> Response:
        doc = {
            "status": "alive",  # what the KServe V1 SDK's is_server_live() reads
            "name": info.name,
            "version": info.version,
            "ready": state.ready,
            "predict": "/predict",
            "docs": "/docs",
            "openapi": "/openapi.json",
            "v2": f"/v2/models/{info.name}",
        }
        return Response(orjson.dumps(doc), media_type=JSON)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return Response(live, media_type=JSON)

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the model is loaded and passed a warm-up prediction",
        responses={503: {"description": "Not ready; the body says why"}},
    )
    async def readyz() -> Response:
        if state.ready:
            doc = {"status": "ready", "model": info.name, "version": info.version}
            return Response(orjson.dumps(doc), media_type=JSON)
        doc = {"status": "not ready", "reason": state.reason}
        return Response(orjson.dumps(doc), status_code=503, media_type=JSON)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this process")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)
