"""The routes of the Open Inference Protocol V2 REST API (the protocol itself is in ``v2``, its
binary tensor data extension in ``v2_binary``), and with them KServe's V1 ``:predict`` routes
(``kserve_v1``): one call serves both protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response

from modelcrate.serve.health import to_response
from modelcrate.serve.kserve_v1 import add_v1_routes
from modelcrate.serve.v2_binary import HEADER, OCTET_STREAM

if TYPE_CHECKING:
    from modelcrate.serve.handlers import Handlers

JSON = "application/json"
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "examples": ["FP32", "BYTES"]},
        "parameters": {"type": "object"},
        "data": {
            "type": "array",
            "description": "row-major values, flat or nested; omitted for a binary tensor "
            "(parameters.binary_data_size)",
        },
    },
}
_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            OCTET_STREAM: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": f"Binary tensor data extension: the JSON request ({HEADER} "
                    "bytes), then the raw data of each input with parameters.binary_data_size",
                }
            },
        },
    },
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "The length of the JSON header of a binary request",
        }
    ],
    "responses": {
        "200": {
            "description": "The inference response: one tensor per requested output; with "
            f"binary outputs, the {HEADER} header gives the length of the JSON part"
        },
        "400": {"description": 'Bad request: {"error": "..."}'},
        "404": {"description": 'Unknown model or version: {"error": "..."}'},
        "413": {
            "description": "Too large: the body is over --max-body-bytes, or a tensor has more "
            'rows than --max-rows: {"error": "..."}'
        },
        "503": {"description": 'The model is not ready: {"error": "..."}'},
    },
}


_MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": 'Unknown model or version: {"error": "..."}'},
}
_READY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_MODEL_ERRORS,
    503: {"description": 'The model is not ready: {"error": "..."}'},
}


def add_v2_routes(app: FastAPI, h: Handlers) -> None:
    tags: list[str | Any] = ["v2"]

    @app.get("/v2", tags=tags, summary="Server metadata")
    async def v2_server() -> Response:
        return to_response(h.v2_server())

    @app.get("/v2/health/live", tags=tags, summary="Server liveness")
    async def v2_live() -> Response:
        return to_response(h.v2_live())

    @app.get(
        "/v2/health/ready",
        tags=tags,
        summary="Server readiness",
        responses={503: {"description": "Not ready"}},
    )
    async def v2_ready() -> Response:
        return to_response(h.v2_ready())

    @app.get("/v2/models/{name}", tags=tags, summary="Model metadata", responses=_MODEL_ERRORS)
    async def v2_model(name: str) -> Response:
        return to_response(h.v2_model(name, None))

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=tags,
        summary="Model metadata",
        responses=_MODEL_ERRORS,
    )
    async def v2_model_version(name: str, version: str) -> Response:
        return to_response(h.v2_model(name, version))

    @app.get(
        "/v2/models/{name}/ready", tags=tags, summary="Model readiness", responses=_READY_ERRORS
    )
    async def v2_model_ready(name: str) -> Response:
        return to_response(h.v2_model_ready(name, None))

    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        tags=tags,
        summary="Model readiness",
        responses=_READY_ERRORS,
    )
    async def v2_model_version_ready(name: str, version: str) -> Response:
        return to_response(h.v2_model_ready(name, version))

    @app.post("/v2/models/{name}/infer", tags=tags, summary="Inference", openapi_extra=_INFER_DOC)
    async def v2_infer(request: Request, name: str) -> Response:
        body = await request.body()
        return to_response(await h.v2_infer(name, None, body, request.headers.get(HEADER)))

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=tags,
        summary="Inference",
        openapi_extra=_INFER_DOC,
    )
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        body = await request.body()
        return to_response(await h.v2_infer(name, version, body, request.headers.get(HEADER)))

    add_v1_routes(app, h)
