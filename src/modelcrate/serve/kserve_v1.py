"""KServe's V1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.

A request is ``{"instances": [...]}``: each instance is a record (feature name -> value) or a
list of feature values in the signature's order. It is validated by the same compiled record
type as ``/predict``, and the answer is ``{"predictions": [...]}`` with one prediction per
instance, exactly as ``/predict`` writes them. Errors are ``{"error": "..."}`` (400, 404, 503).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from modelcrate.serve.codec import PredictionFailed, Record
from modelcrate.serve.state import NotReady
from modelcrate.serve.v2 import V2Error

if TYPE_CHECKING:
    from modelcrate.serve.codec import Codec
    from modelcrate.serve.state import ServingState

log = logging.getLogger("modelcrate.serve")

JSON = "application/json"
MAX_REPORTED_ERRORS = 10
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


def add_v1_routes(app: FastAPI, state: ServingState) -> None:
    info = state.info
    codec = state.codec
    names = tuple(info.signature.feature_names)
    tags: list[str | Any] = ["v1"]

    def check_model(name: str) -> None:
        if name != info.name:
            raise V2Error(
                404, f"model {name!r} is not served here; this server serves {info.name!r}"
            )

    @app.get("/v1/models/{name}", tags=tags, summary="Model readiness (V1)", responses=_ERRORS)
    async def v1_model(name: str) -> Response:
        check_model(name)
        if not state.ready:
            raise V2Error(503, f"model {name!r} is not ready: {state.reason}")
        return Response(orjson.dumps({"name": name, "ready": True}), media_type=JSON)

    @app.post(
        "/v1/models/{name}:predict",
        tags=tags,
        summary="Predict (V1)",
        responses=_ERRORS,
        openapi_extra=_PREDICT_DOC,
    )
    async def v1_predict(request: Request, name: str) -> Response:
        check_model(name)
        records = _records(await request.body(), names, codec)
        rows = len(records)
        try:
            outputs = await state.predict(codec.to_inputs(records), rows)
            predictions = codec.to_predictions(outputs, rows)
        except NotReady as exc:
            raise V2Error(503, f"model {name!r} is not ready: {exc}") from None
        except PredictionFailed as exc:
            if exc.client_error:
                raise V2Error(400, str(exc)) from None
            log.error("prediction failed: %s", exc)
            raise V2Error(500, f"prediction failed: {exc}") from None
        return Response(codec.dumps({"predictions": predictions}), media_type=JSON)


def _records(body: bytes, names: tuple[str, ...], codec: Codec) -> list[Record]:
    """The validated records of a V1 request body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise V2Error(400, f"the request body is not valid JSON: {exc}") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise V2Error(400, "the request body must be an object with a non-empty 'instances' list")
    raw: list[Any] = []
    for i, inst in enumerate(instances):
        if isinstance(inst, list):
            if len(inst) != len(names):
                raise V2Error(
                    400,
                    f"instances[{i}] has {len(inst)} values; the model takes {len(names)}: "
                    + ", ".join(names),
                )
            raw.append(dict(zip(names, inst, strict=True)))
        elif isinstance(inst, dict):
            raw.append(inst)
        else:
            raise V2Error(
                400, f"instances[{i}] must be a record (object) or a list of feature values"
            )
    try:
        return codec.validate_records(raw)
    except ValidationError as exc:
        raise V2Error(400, _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_context=False)
    parts = []
    for e in errors[:MAX_REPORTED_ERRORS]:
        loc = list(e["loc"])
        where = f"instances[{loc[0]}]" if loc and isinstance(loc[0], int) else "instances"
        field = ".".join(str(p) for p in loc[1:])
        parts.append(f"{where}{'.' + field if field else ''}: {e['msg']}")
    more = len(errors) - MAX_REPORTED_ERRORS
    return "invalid instances: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
