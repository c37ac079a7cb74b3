"""The FastAPI app that documents a served crate (``/docs``, ``/openapi.json``) and answers
every path the fast router (``serve.fast``) does not: 404, 405, trailing slashes. Its routes
call the same handlers as the fast path, so the documented contract is the served one. Built
on the first request that needs it, never at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException

from modelcrate import __version__
from modelcrate.serve.health import add_health_routes, to_response
from modelcrate.serve.v2_routes import add_v2_routes

if TYPE_CHECKING:
    from modelcrate.serve.fast import ServingApp
    from modelcrate.serve.model import ModelInfo

JSON = "application/json"


def build_docs_app(served: ServingApp) -> FastAPI:
    """The FastAPI app of ``served``: every route documented (``/docs``, ``/openapi.json``),
    each answered by the same handler as the fast path; paths nothing serves get FastAPI's
    404/405 (``{"error": ...}`` under ``/v2``)."""
    state = served.serving
    info = state.info
    handlers = served.handlers
    sig = info.signature
    app = FastAPI(title=served.title, version=info.version, description=_description(info))
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    schema = state.codec.schema

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
                "413": {
                    "description": "Too large: the body is over --max-body-bytes, or it has "
                    'more records than --max-rows: {"error": "..."}'
                },
                "503": {"description": "The model is not ready"},
            },
        },
    )
    async def predict(request: Request) -> Response:
        return to_response(await handlers.predict(await request.body()))

    add_health_routes(app, handlers)
    add_v2_routes(app, handlers)

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
