"""The FastAPI app of one crate: typed ``/predict``, the V2 protocol, health and metrics.

``create_app(crate_dir)`` reads and verifies the manifest now (the routes and schemas come from
its signature) and loads the predictor once, in the app's lifespan, followed by a warm-up
prediction. Request bodies are validated straight from bytes by the compiled signature types
and responses are written by orjson: no Pydantic model is built per request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from modelcrate import __version__
from modelcrate.errors import InputError
from modelcrate.serve.codec import PredictionFailed
from modelcrate.serve.health import add_health_routes
from modelcrate.serve.limits import Gate, Limits, LimitsMiddleware
from modelcrate.serve.metrics import Metrics, MetricsMiddleware
from modelcrate.serve.model import ModelInfo, open_predictor, read_model_info
from modelcrate.serve.state import NotReady, ServingState
from modelcrate.serve.v2 import V2Error
from modelcrate.serve.v2_routes import add_v2_routes

if TYPE_CHECKING:
    from modelcrate.runtime import Predictor

log = logging.getLogger("modelcrate.serve")

JSON = "application/json"
CRATE_ENV = "MODELCRATE_SERVE_CRATE"  # the crate folder, for `--workers N` (app factory)
MAX_REPORTED_ERRORS = 50


def create_app(crate_dir: Path) -> FastAPI:
    """The service of the crate at ``crate_dir`` (its model is loaded when the app starts)."""
    info = read_model_info(Path(crate_dir))
    return build_app(info, lambda: open_predictor(info))


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and worker processes: the crate from the env."""
    crate = os.environ.get(CRATE_ENV)
    if not crate:
        raise InputError(f"{CRATE_ENV} is not set", hint="run 'modelcrate serve NAME|DIR'")
    return create_app(Path(crate))


def build_app(
    info: ModelInfo, loader: Callable[[], Predictor], limits: Limits | None = None
) -> FastAPI:
    """The app for ``info``; ``loader`` returns the predictor and runs once, at start-up.
    ``limits`` default to those ``modelcrate serve`` set for its workers, else the defaults."""
    metrics = Metrics(info)
    gate = Gate(limits if limits is not None else Limits.from_env())
    state = ServingState(info, loader, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.load()
        try:
            yield
        finally:
            state.unload()
            log.info("shutdown: %s", gate.summary())

    sig = info.signature
    app = FastAPI(
        title=f"{info.name} (modelcrate)",
        version=info.version,
        description=_description(info),
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.gate = gate
    app.add_middleware(LimitsMiddleware, gate=gate)  # inside the metrics: refusals counted
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(V2Error, _v2_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    codec = state.codec
    schema = codec.schema

    @app.post(
        "/predict",
        summary=f"Predict with {info.name}",
        description=(
            "Send one record or a list of records (named, typed fields); get one prediction "
            "per record"
            + (": the label and the probability of each class." if sig.classes else ".")
        ),
        tags=["predict"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": schema.request}},
            },
            "responses": {
                "200": {
                    "description": "Predictions",
                    "content": {JSON: {"schema": schema.response}},
                },
                "422": {
                    "description": "Invalid input: each problem names its record and field",
                    "content": {
                        JSON: {"schema": {"$ref": "#/components/schemas/PredictValidationError"}}
                    },
                },
                "503": {"description": "The model is not ready"},
            },
        },
    )
    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            records, single = codec.parse_json(body)
        except ValidationError as exc:
            return _validation_error(exc)
        rows = len(records)
        try:
            outputs = await state.predict(codec.to_inputs(records), rows)
            predictions = codec.to_predictions(outputs, rows)
        except NotReady as exc:
            return _json({"detail": f"the model is not ready: {exc}"}, 503)
        except PredictionFailed as exc:
            if exc.client_error:
                return _json({"detail": [{"loc": ["body"], "msg": str(exc), "type": "model"}]}, 422)
            log.error("prediction failed: %s", exc)
            return _json({"detail": f"prediction failed: {exc}"}, 500)
        return Response(codec.dumps(predictions[0] if single else predictions), media_type=JSON)

    add_health_routes(app, state)
    add_v2_routes(app, state)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(schema.components)
            _drop_path_param_422s(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _description(info: ModelInfo) -> str:
    sig = info.signature
    lines = [
        f"Model **{info.name}**, version `{info.version}` ({info.flavor}, {info.runtime}), "
        f"served by modelcrate {__version__}.",
        "",
        f"Task: {sig.task}. Inputs: "
        + ", ".join(f"`{c.name}` ({c.dtype})" for c in sig.inputs)
        + ".",
    ]
    if sig.classes:
        lines.append("Classes: " + ", ".join(f"`{c}`" for c in sig.classes) + ".")
    lines += [
        "",
        "Also speaks the Open Inference Protocol V2 under `/v2` (JSON and binary tensors).",
    ]
    return "\n".join(lines)


def _drop_path_param_422s(doc: dict[str, Any]) -> None:
    """FastAPI documents a 422 for every route with path parameters; the V2 routes take plain
    strings and answer errors as ``{"error": ...}`` (400/404), never 422: drop those entries
    and the validation-error schemas nothing else refers to."""
    for path, item in doc.get("paths", {}).items():
        if path.startswith("/v2"):
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # the first refers to the second
        others = {k: v for k, v in schemas.items() if k != name}
        rest = orjson.dumps({"paths": doc.get("paths", {}), "schemas": others})
        if name in schemas and f'"#/components/schemas/{name}"'.encode() not in rest:
            del schemas[name]


def _json(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def _validation_error(exc: ValidationError) -> Response:
    errors = exc.errors(include_url=False, include_context=False)
    detail = [
        {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": e.get("input")}
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    if len(errors) > MAX_REPORTED_ERRORS:
        detail.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_REPORTED_ERRORS} more errors not shown",
                "input": None,
            }
        )
    body = orjson.dumps({"detail": detail}, default=repr)
    return Response(body, status_code=422, media_type=JSON)


async def _v2_error(_request: Request, exc: V2Error) -> Response:
    return _json({"error": exc.message}, exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (404, 405) speak V2's ``{"error": ...}`` under ``/v2``."""
    if request.url.path.startswith("/v2"):
        return Response(
            orjson.dumps({"error": str(exc.detail)}),
            status_code=exc.status_code,
            headers=exc.headers,
            media_type=JSON,
        )
    return await http_exception_handler(request, exc)
