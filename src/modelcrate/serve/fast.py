"""The server's ASGI app: the hot routes routed by hand, the rest by FastAPI, built on demand.

Per request, FastAPI's routing, dependency resolution and response classes cost several times
what a one-row ONNX prediction does. So the endpoints a client calls in a loop (``/predict``,
V2 infer, V1 ``:predict``) and the probes (``/healthz``, ``/readyz``, ``/metrics``, V2 health
and metadata) are matched here with a dict lookup or a split of the path, and answered by
``serve.handlers``. Everything else (``/docs``, ``/openapi.json``, 404s, 405s) goes to the
FastAPI app of ``serve.docs_app``, whose routes call the same handlers: the OpenAPI contract and
the answers are one. FastAPI is imported and that app built on the first such request (in a
worker thread, so the event loop keeps serving), not at start-up: start-up pays for what
serving needs only.

The limits (413/503/504) and metrics middlewares wrap both paths; each fast route sets
``scope["route"]`` to its template, as FastAPI does, for the metrics' route label.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from modelcrate.serve.handlers import Handlers, Reply
from modelcrate.serve.limits import Gate, LimitsMiddleware
from modelcrate.serve.metrics import MetricsMiddleware
from modelcrate.serve.v2_binary import HEADER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from modelcrate.serve.state import ServingState

log = logging.getLogger("modelcrate.serve")

_BINARY_HEADER = HEADER.lower().encode()
Route = Callable[["Scope", bytes], Awaitable[Reply]]


class _Template:
    """What ``scope["route"]`` holds for a fast route (the metrics read ``.path``)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class ServingApp:
    """ASGI app of one crate: ``await app(scope, receive, send)``; its lifespan loads the model."""

    def __init__(self, state: ServingState, gate: Gate, title: str) -> None:
        self.serving = state
        self.gate = gate
        self.title = title
        self.handlers = Handlers(state, gate.limits.max_rows)
        self._docs: ASGIApp | None = None
        self._docs_lock = asyncio.Lock()
        inner = LimitsMiddleware(self._route, gate)  # inside the metrics: refusals counted
        self._app = MetricsMiddleware(inner, state.metrics)
        h = self.handlers
        self._get: dict[str, tuple[_Template, Callable[[], Reply]]] = {
            p: (_Template(p), fn)
            for p, fn in {
                "/": h.index,
                "/healthz": h.healthz,
                "/readyz": h.readyz,
                "/metrics": h.metrics,
                "/v2": h.v2_server,
                "/v2/health/live": h.v2_live,
                "/v2/health/ready": h.v2_ready,
            }.items()
        }
        self._predict = _Template("/predict")
        self._templates = {
            t: _Template(t)
            for t in (
                "/v2/models/{name}",
                "/v2/models/{name}/ready",
                "/v2/models/{name}/infer",
                "/v2/models/{name}/versions/{version}",
                "/v2/models/{name}/versions/{version}/ready",
                "/v2/models/{name}/versions/{version}/infer",
                "/v1/models/{name}",
                "/v1/models/{name}:predict",
            )
        }

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: nothing here speaks it; let FastAPI refuse it properly
            await (await self.docs_app())(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Load and warm up the model; on exit, unload it and log the request accounting."""
        self.serving.load()
        # Everything loaded so far (the model, its runtime, the frameworks) lives as long as
        # the process: out of the collector's sight, a collection scans per-request garbage only
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            self.serving.unload()
            log.info("shutdown: %s", self.gate.summary())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        context = self.lifespan()
        try:
            await context.__aenter__()
        except Exception as exc:
            log.error("start-up failed: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    # -- routing ---------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        reply: Reply | None = None
        if method == "POST":
            if path == "/predict":
                scope["route"] = self._predict
                reply = await self.handlers.predict(await _body(receive))
            elif path.startswith("/v2/models/") or path.startswith("/v1/models/"):
                reply = await self._post_model(scope, path, receive)
        elif method == "GET":
            found = self._get.get(path)
            if found is not None:
                scope["route"] = found[0]
                reply = found[1]()
            elif path.startswith("/v2/models/") or path.startswith("/v1/models/"):
                reply = self._get_model(scope, path)
        if reply is None:
            await (await self.docs_app())(scope, receive, send)
            return
        headers = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        if reply.headers:
            headers += reply.headers
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _post_model(self, scope: Scope, path: str, receive: Receive) -> Reply | None:
        parts = path.split("/")  # ["", "v2", "models", name, ...]
        h = self.handlers
        if parts[1] == "v1":
            if len(parts) == 4 and parts[3].endswith(":predict"):
                scope["route"] = self._templates["/v1/models/{name}:predict"]
                return await h.v1_predict(parts[3].removesuffix(":predict"), await _body(receive))
            return None
        if len(parts) == 5 and parts[4] == "infer":
            name, version, template = parts[3], None, "/v2/models/{name}/infer"
        elif len(parts) == 7 and parts[4] == "versions" and parts[6] == "infer":
            name, version = parts[3], parts[5]
            template = "/v2/models/{name}/versions/{version}/infer"
        else:
            return None
        if not name or version == "":
            return None
        scope["route"] = self._templates[template]
        header_length = None
        for key, value in scope["headers"]:
            if key == _BINARY_HEADER:
                header_length = value.decode("latin-1")
                break
        return await h.v2_infer(name, version, await _body(receive), header_length)

    def _get_model(self, scope: Scope, path: str) -> Reply | None:
        parts = path.split("/")
        h = self.handlers
        if any(p == "" for p in parts[1:]):
            return None
        if parts[1] == "v1":
            if len(parts) == 4 and ":" not in parts[3]:
                scope["route"] = self._templates["/v1/models/{name}"]
                return h.v1_model(parts[3])
            return None
        n = len(parts)
        if n == 4:
            template, reply = "/v2/models/{name}", h.v2_model(parts[3], None)
        elif n == 5 and parts[4] == "ready":
            template, reply = "/v2/models/{name}/ready", h.v2_model_ready(parts[3], None)
        elif n == 6 and parts[4] == "versions":
            template = "/v2/models/{name}/versions/{version}"
            reply = h.v2_model(parts[3], parts[5])
        elif n == 7 and parts[4] == "versions" and parts[6] == "ready":
            template = "/v2/models/{name}/versions/{version}/ready"
            reply = h.v2_model_ready(parts[3], parts[5])
        else:
            return None
        scope["route"] = self._templates[template]
        return reply

    @property
    def http_protocol(self) -> type[asyncio.Protocol] | str:
        """Uvicorn's HTTP protocol with ``POST /predict`` answered in place (``serve.protocol``):
        pass it as ``uvicorn.run(app, http=app.http_protocol)``. ``"auto"`` (uvicorn's own)
        where the installed uvicorn lacks what the fast path builds on."""
        from modelcrate.serve.protocol import fast_protocol, fast_protocol_supported

        if not fast_protocol_supported():
            log.warning("this uvicorn has no httptools protocol to extend: no HTTP fast path")
            return "auto"
        return fast_protocol(self)

    # -- the documented (FastAPI) app ------------------------------------------------------

    async def docs_app(self) -> ASGIApp:
        """The FastAPI app (docs, OpenAPI, every other path), built once, off the event loop."""
        if self._docs is None:
            async with self._docs_lock:
                if self._docs is None:
                    from modelcrate.serve.docs_app import build_docs_app

                    self._docs = await asyncio.to_thread(build_docs_app, self)
        return self._docs


async def _body(receive: Receive) -> bytes:
    message: Message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
