"""KServe's V1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.

A request is ``{"instances": [...]}``: each instance is a record (feature name -> value) or a
list of feature values in the signature's order. It is validated by the same compiled record
type as ``/predict``, and the answer is ``{"predictions": [...]}`` with one prediction per
instance, exactly as ``/predict`` writes them. Errors are ``{"error": "..."}`` (400, 404, 503).
The routes are documented here; ``serve.handlers`` answers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response

from modelcrate.serve.health import to_response

if TYPE_CHECKING:
    from modelcrate.serve.handlers import Handlers

JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": 'Bad request (400) or unknown model (404): {"error": "..."}'},
    503: {"description": 'The model is not ready: {"error": "..."}'},
}
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": ["object", "array"]},
                            "description": "records, or lists of feature values in the "
                            "signature's order",
                        }
                    },
                }
            }
        },
    },
}


def add_v1_routes(app: FastAPI, h: Handlers) -> None:
    tags: list[str | Any] = ["v1"]

    @app.get("/v1/models/{name}", tags=tags, summary="Model readiness (V1)", responses=_ERRORS)
    async def v1_model(name: str) -> Response:
        return to_response(h.v1_model(name))

    @app.post(
        "/v1/models/{name}:predict",
        tags=tags,
        summary="Predict (V1)",
        responses=_ERRORS,
        openapi_extra=_PREDICT_DOC,
    )
    async def v1_predict(request: Request, name: str) -> Response:
        return to_response(await h.v1_predict(name, await request.body()))
