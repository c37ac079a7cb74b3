"""The routes of the Open Inference Protocol V2 REST API (the protocol itself is in ``v2``, its
binary tensor data extension in ``v2_binary``), and with them KServe's V1 ``:predict`` routes
(``kserve_v1``): one call serves both protocols."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response

from modelcrate.serve.codec import PredictionFailed
from modelcrate.serve.kserve_v1 import add_v1_routes
from modelcrate.serve.state import NotReady
from modelcrate.serve.v2 import V2Codec, V2Error, server_metadata
from modelcrate.serve.v2_binary import HEADER, OCTET_STREAM

if TYPE_CHECKING:
    from modelcrate.serve.state import ServingState

log = logging.getLogger("modelcrate.serve")

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
        "503": {"description": 'The model is not ready: {"error": "..."}'},
    },
}


def add_v2_routes(app: FastAPI, state: ServingState) -> None:
    codec = V2Codec(state.info)
    server_doc = orjson.dumps(server_metadata())
    metadata_doc = orjson.dumps(codec.metadata)
    tags: list[str | Any] = ["v2"]

    def ok(body: bytes) -> Response:
        return Response(body, media_type=JSON)

    def ready_doc(name: str, version: str | None) -> Response:
        codec.check_model(name, version)
        if not state.ready:
            raise V2Error(503, f"model {name!r} is not ready: {state.reason}")
        return ok(orjson.dumps({"name": name, "ready": True}))

    async def infer(request: Request, name: str, version: str | None) -> Response:
        codec.check_model(name, version)
        parsed = codec.parse_request(await request.body(), request.headers.get(HEADER))
        try:
            outputs = await state.predict(parsed.inputs, parsed.rows)
            body, header_length = codec.response(outputs, parsed)
            if header_length is None:
                return ok(body)
            return Response(body, media_type=OCTET_STREAM, headers={HEADER: str(header_length)})
        except NotReady as exc:
            raise V2Error(503, f"model {name!r} is not ready: {exc}") from None
        except PredictionFailed as exc:
            if exc.client_error:
                raise V2Error(400, str(exc)) from None
            log.error("prediction failed: %s", exc)
            raise V2Error(500, f"prediction failed: {exc}") from None

    @app.get("/v2", tags=tags, summary="Server metadata")
    async def v2_server() -> Response:
        return ok(server_doc)

    @app.get("/v2/health/live", tags=tags, summary="Server liveness")
    async def v2_live() -> Response:
        return ok(b'{"live":true}')

    @app.get("/v2/health/ready", tags=tags, summary="Server readiness")
    async def v2_ready() -> Response:
        if state.ready:
            return ok(b'{"ready":true}')
        return Response(b'{"ready":false}', status_code=503, media_type=JSON)

    @app.get("/v2/models/{name}", tags=tags, summary="Model metadata")
    async def v2_model(name: str) -> Response:
        codec.check_model(name, None)
        return ok(metadata_doc)

    @app.get("/v2/models/{name}/versions/{version}", tags=tags, summary="Model metadata")
    async def v2_model_version(name: str, version: str) -> Response:
        codec.check_model(name, version)
        return ok(metadata_doc)

    @app.get("/v2/models/{name}/ready", tags=tags, summary="Model readiness")
    async def v2_model_ready(name: str) -> Response:
        return ready_doc(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=tags, summary="Model readiness")
    async def v2_model_version_ready(name: str, version: str) -> Response:
        return ready_doc(name, version)

    @app.post("/v2/models/{name}/infer", tags=tags, summary="Inference", openapi_extra=_INFER_DOC)
    async def v2_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=tags,
        summary="Inference",
        openapi_extra=_INFER_DOC,
    )
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    add_v1_routes(app, state)
