"""What every route answers, without a web framework: bytes in, :class:`Reply` out.

The server's fast ASGI router (``serve.fast``) calls these directly; the FastAPI app that
documents the API (``/docs``, ``/openapi.json``) routes to the very same methods, so there is
one implementation of each endpoint. Nothing here imports FastAPI or Starlette.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import orjson

from modelcrate.serve.codec import PredictionFailed, Record
from modelcrate.serve.state import NotReady
from modelcrate.serve.v2 import V2Codec, V2Error, server_metadata
from modelcrate.serve.v2_binary import OCTET_STREAM
from modelcrate.serve.validation import (
    MAX_ERRORS,
    InvalidRecords,
    TooManyRecords,
    clip_str,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from modelcrate.serve.state import ServingState

log = logging.getLogger("modelcrate.serve")

JSON = b"application/json"
MAX_V1_ERRORS = 10  # in a 400 of V1 :predict
MAX_MESSAGE = 1000  # characters of an error message
Headers = list[tuple[bytes, bytes]]


class Reply:
    """A complete HTTP answer."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: bytes = JSON,
        headers: Headers | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers

    @classmethod
    def json(cls, doc: object, status: int = 200) -> Reply:
        return cls(orjson.dumps(doc), status)

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        """The V2/V1 error body: ``{"error": message}`` (a message is at most
        :data:`MAX_MESSAGE` characters: what it quotes of a request stays short)."""
        return cls(orjson.dumps({"error": clip_str(message, MAX_MESSAGE)}), status)


class Handlers:
    """The endpoints of one served model (built once per app, after its state)."""

    def __init__(self, state: ServingState, max_rows: int = 0) -> None:
        self.state = state
        self.max_rows = max_rows  # records (rows) per request; 0: no limit
        info = state.info
        self.info = info
        self.codec = state.codec
        self.v2 = V2Codec(info, max_rows)
        self._names = tuple(info.signature.feature_names)
        self._server_doc = orjson.dumps(server_metadata())
        self._metadata_doc = orjson.dumps(self.v2.metadata)

    # -- typed API -------------------------------------------------------------------------

    async def predict(self, body: bytes) -> Reply:
        parsed = self.predict_parse(body)
        if isinstance(parsed, Reply):
            return parsed
        inputs, rows, single = parsed
        try:
            outputs = await self.state.predict(inputs, rows)
        except (NotReady, PredictionFailed) as exc:
            return self.predict_error(exc)
        return self.predict_reply(outputs, rows, single)

    # /predict in three steps, for the HTTP fast path (``serve.protocol``), which runs the
    # model through the batcher without a task per request

    def predict_parse(self, body: bytes) -> Reply | tuple[dict[str, np.ndarray], int, bool]:
        """The request's inputs, rows and whether it was one record; or the 422 (413 for
        more records than ``max_rows``)."""
        try:
            return self.codec.parse_request(body, self.max_rows)
        except TooManyRecords as exc:
            return Reply.error(413, str(exc))
        except InvalidRecords as exc:
            return validation_error(exc)

    def predict_reply(self, outputs: Mapping[str, np.ndarray], rows: int, single: bool) -> Reply:
        codec = self.codec
        try:
            predictions = codec.to_predictions(outputs, rows)
        except PredictionFailed as exc:
            return self.predict_error(exc)
        return Reply(codec.dumps(predictions[0] if single else predictions))

    @staticmethod
    def predict_error(exc: NotReady | PredictionFailed) -> Reply:
        if isinstance(exc, NotReady):
            return Reply.json({"detail": f"the model is not ready: {exc}"}, 503)
        if exc.client_error:
            detail = [{"loc": ["body"], "msg": str(exc), "type": "model"}]
            return Reply.json({"detail": detail}, 422)
        log.error("prediction failed: %s", exc)
        return Reply.json({"detail": f"prediction failed: {exc}"}, 500)

    # -- health ----------------------------------------------------------------------------

    def index(self) -> Reply:
        info = self.info
        return Reply.json(
            {
                "status": "alive",  # what the KServe V1 SDK's is_server_live() reads
                "name": info.name,
                "version": info.version,
                "ready": self.state.ready,
                "predict": "/predict",
                "docs": "/docs",
                "openapi": "/openapi.json",
                "v2": f"/v2/models/{info.name}",
            }
        )

    def healthz(self) -> Reply:
        return Reply(b'{"status":"ok"}')

    def readyz(self) -> Reply:
        state = self.state
        if state.ready:
            info = self.info
            return Reply.json({"status": "ready", "model": info.name, "version": info.version})
        return Reply.json({"status": "not ready", "reason": state.reason}, 503)

    def metrics(self) -> Reply:
        text, content_type = self.state.metrics.render()
        return Reply(text, content_type=content_type.encode())

    # -- Open Inference Protocol V2 --------------------------------------------------------

    def v2_server(self) -> Reply:
        return Reply(self._server_doc)

    def v2_live(self) -> Reply:
        return Reply(b'{"live":true}')

    def v2_ready(self) -> Reply:
        if self.state.ready:
            return Reply(b'{"ready":true}')
        return Reply(b'{"ready":false}', 503)

    def v2_model(self, name: str, version: str | None) -> Reply:
        try:
            self.v2.check_model(name, version)
        except V2Error as exc:
            return Reply.error(exc.status, exc.message)
        return Reply(self._metadata_doc)

    def v2_model_ready(self, name: str, version: str | None) -> Reply:
        try:
            self.v2.check_model(name, version)
        except V2Error as exc:
            return Reply.error(exc.status, exc.message)
        if not self.state.ready:
            return Reply.error(503, f"model {name!r} is not ready: {self.state.reason}")
        return Reply.json({"name": name, "ready": True})

    async def v2_infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None
    ) -> Reply:
        codec = self.v2
        try:
            codec.check_model(name, version)
            parsed = codec.parse_request(body, header_length)
            outputs = await self.state.predict(parsed.inputs, parsed.rows)
            data, json_length = codec.response(outputs, parsed)
        except (V2Error, NotReady, PredictionFailed) as exc:
            return self._protocol_error(name, exc)
        if json_length is None:
            return Reply(data)
        return Reply(
            data,
            content_type=OCTET_STREAM.encode(),
            headers=[(b"inference-header-content-length", str(json_length).encode())],
        )

    # -- KServe V1 -------------------------------------------------------------------------

    def v1_model(self, name: str) -> Reply:
        return self.v2_model_ready(name, None)  # the same answers: {"name", "ready"}, 404, 503

    async def v1_predict(self, name: str, body: bytes) -> Reply:
        codec = self.codec
        try:
            self.v2.check_model(name, None)
            records = v1_records(body, self._names, codec, self.max_rows)
            rows = len(records)
            outputs = await self.state.predict(codec.to_inputs(records), rows)
            predictions = codec.to_predictions(outputs, rows)
        except (V2Error, NotReady, PredictionFailed) as exc:
            return self._protocol_error(name, exc)
        return Reply(codec.dumps({"predictions": predictions}))

    @staticmethod
    def _protocol_error(name: str, exc: V2Error | NotReady | PredictionFailed) -> Reply:
        """The V2/V1 ``{"error": ...}`` answer to a failed request."""
        if isinstance(exc, V2Error):
            return Reply.error(exc.status, exc.message)
        if isinstance(exc, NotReady):
            return Reply.error(503, f"model {name!r} is not ready: {exc}")
        if exc.client_error:
            return Reply.error(400, str(exc))
        log.error("prediction failed: %s", exc)
        return Reply.error(500, f"prediction failed: {exc}")


def validation_error(exc: InvalidRecords) -> Reply:
    """The 422 of ``/predict``: FastAPI's shape, each problem naming its record and field, at
    most ``MAX_ERRORS`` of them, each echoed input clipped (``serve.validation``)."""
    detail = [
        {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": e["input"]}
        for e in exc.errors
    ]
    if exc.more:
        detail.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"more errors not shown: at most {MAX_ERRORS} are reported",
                "input": None,
            }
        )
    doc = {"detail": detail}
    try:
        body = orjson.dumps(doc, default=repr)
    except TypeError:  # the input echoed holds an integer beyond 64 bits: orjson has no bigint
        body = json.dumps(doc, default=repr, separators=(",", ":")).encode()
    return Reply(body, 422)


def v1_records(body: bytes, names: tuple[str, ...], codec: Any, max_rows: int = 0) -> list[Record]:
    """The validated records of a V1 request body (``{"instances": [...]}``), at most
    ``max_rows`` of them (0: no limit)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise V2Error(400, f"the request body is not valid JSON: {exc}") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise V2Error(400, "the request body must be an object with a non-empty 'instances' list")
    if max_rows and len(instances) > max_rows:
        raise V2Error(413, str(TooManyRecords(len(instances), max_rows, "instances")))
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
        records: list[Record] = codec.validate_bounded(raw)
    except InvalidRecords as exc:
        raise V2Error(400, _describe_v1(exc)) from None
    return records


def _describe_v1(exc: InvalidRecords) -> str:
    parts = []
    for e in exc.errors[:MAX_V1_ERRORS]:
        loc = list(e["loc"])
        where = f"instances[{loc[0]}]" if loc and isinstance(loc[0], int) else "instances"
        field = ".".join(str(p) for p in loc[1:])
        parts.append(f"{where}{'.' + field if field else ''}: {e['msg']}")
    more = len(exc.errors) - MAX_V1_ERRORS
    if more > 0 or exc.more:
        parts.append("and more")
    return "invalid instances: " + "; ".join(parts)
