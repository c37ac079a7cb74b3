"""Hostile inputs, in process: the same value rules on every route, bounded validation (and its
errors equal to the validator's own), bounded tensors and echoes, the limits middleware's
handling of slow bodies, and the HTTP protocol's backpressure and header limits driven byte by
byte. (``test_hostile_server`` sends the same kinds of requests to a real server process.)

The names this work added (``serve.validation``, the protocol's limits) are imported inside the
tests that need them: the other tests run, and fail, against the code before it."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any

import anyio
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.serve import Codec, ModelInfo, build_app
from modelcrate.serve.limits import Gate, Limits, LimitsMiddleware
from modelcrate.serve.v2_binary import BinaryFormatError, decode
from tests.serve.asgi import AppClient
from tests.serve.crates import Built, records
from tests.serve.test_protocol import Harness, Transport, _app, _request, _responses

# -- the same value rules on every route -----------------------------------------------------

IRIS = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
BAD_NUMBERS = [1e39, -1e39, True, False, "3", [1.0], {"v": 1}]


def _v2_tensor(values: list[Any]) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": values}


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_a_bad_number_is_refused_by_every_route(iris_client: AppClient, bad: Any) -> None:
    """Before, V2 JSON took ``1e39`` (infinite once float32) and ``true`` (as 1.0) where
    ``/predict`` answered 422."""
    record = dict(zip(IRIS, [bad, 3.5, 1.4, 0.2], strict=True))
    predict = iris_client.post("/predict", json=record)
    assert predict.status_code == 422, predict.text
    v2 = iris_client.post(
        "/v2/models/iris/infer", json={"inputs": [_v2_tensor([bad, 3.5, 1.4, 0.2])]}
    )
    assert v2.status_code == 400, v2.text
    v2_columns = iris_client.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP32", "data": [v]}
                for n, v in record.items()
            ]
        },
    )
    assert v2_columns.status_code == 400, v2_columns.text
    v1 = iris_client.post("/v1/models/iris:predict", json={"instances": [record]})
    assert v1.status_code == 400, v1.text
    v1_list = iris_client.post(
        "/v1/models/iris:predict", json={"instances": [list(record.values())]}
    )
    assert v1_list.status_code == 400, v1_list.text


def test_good_numbers_are_taken_by_every_route(iris_client: AppClient) -> None:
    values = [3.4e38, -5, 0, 1.5]  # the float32 edge, integers
    record = dict(zip(IRIS, values, strict=True))
    assert iris_client.post("/predict", json=record).status_code == 200
    v2 = iris_client.post("/v2/models/iris/infer", json={"inputs": [_v2_tensor(values)]})
    assert v2.status_code == 200, v2.text
    assert (
        iris_client.post("/v1/models/iris:predict", json={"instances": [values]}).status_code == 200
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (np.array([1, np.inf, 0, 0], dtype="<f4").tobytes(), "infinite"),
        (np.array([1, -np.inf, 0, 0], dtype="<f4").tobytes(), "infinite"),
    ],
)
def test_binary_floats_follow_the_same_rules(
    iris_client: AppClient, raw: bytes, fragment: str
) -> None:
    """Raw FP32 can hold what JSON cannot: infinities are refused as /predict refuses them."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    answer = iris_client.post(
        "/v2/models/iris/infer",
        content=header + raw,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]


# A model whose float64 column ends up in a float32 tensor (as test_fast_parse's): 1e300 in it
# became inf on the way to the model.
WIDE = Signature(
    inputs=(Column("a", "float32"), Column("d", "float64")),
    outputs=(Output("prediction", "float32"),),
    task="regression",
    tensor_input=True,
)


class Sum:
    signature = WIDE

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["input"]
        self.seen.append(x)
        return {"prediction": x.sum(axis=1).astype(np.float32)}


def test_a_float64_column_of_a_float32_tensor_is_bounded_on_every_route() -> None:
    model = Sum()
    info = ModelInfo(name="wide", version="sha256:" + "cd" * 32, signature=WIDE)
    with AppClient(build_app(info, lambda: model)) as client:
        assert client.post("/predict", json={"a": 1, "d": 1e300}).status_code == 422
        column = {"name": "d", "shape": [1], "datatype": "FP64", "data": [1e300]}
        a = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
        v2 = client.post("/v2/models/wide/infer", json={"inputs": [a, column]})
        assert v2.status_code == 400, v2.text
        assert "beyond float32" in v2.json()["error"]
        raw = np.array([1e300], dtype="<f8").tobytes()
        header = orjson.dumps(
            {
                "inputs": [
                    a,
                    {"name": "d", "shape": [1], "datatype": "FP64",
                     "parameters": {"binary_data_size": 8}},
                ]
            }
        )  # fmt: skip
        binary = client.post(
            "/v2/models/wide/infer",
            content=header + raw,
            headers={"inference-header-content-length": str(len(header))},
        )
        assert binary.status_code == 400, binary.text
        v1 = client.post("/v1/models/wide:predict", json={"instances": [[1, 1e300]]})
        assert v1.status_code == 400
        assert client.post("/predict", json={"a": 1, "d": 1e30}).status_code == 200
        assert all(np.isfinite(x).all() for x in model.seen)


# -- bounded tensors -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2**40, 2**62, 3])
def test_bytes_elements_are_counted_against_the_bytes_sent(count: int) -> None:
    """Every BYTES element takes at least 4 bytes: a count beyond len(data) / 4 is refused
    before anything is allocated for it (before: ``np.empty(count)``, a MemoryError)."""
    with pytest.raises(BinaryFormatError, match=f"{count} elements need at least"):
        decode(memoryview(struct.pack("<I", 1) + b"a"), "plan", "BYTES", count)
    assert decode(memoryview(struct.pack("<I", 1) + b"a"), "plan", "BYTES", 1).tolist() == ["a"]


def test_rows_are_capped_on_every_route(iris: Built) -> None:
    info_app = _app(iris, max_rows=10)
    with AppClient(info_app) as client:
        recs = records(iris, slice(0, 11))
        answer = client.post("/predict", json=recs)
        assert answer.status_code == 413
        assert "at most 10" in answer.json()["error"]
        assert client.post("/predict", json=recs[:10]).status_code == 200
        v1 = client.post("/v1/models/iris:predict", json={"instances": recs})
        assert v1.status_code == 413
        tensor = {"name": "input", "shape": [11, 4], "datatype": "FP32", "data": [1.0] * 44}
        v2 = client.post("/v2/models/iris/infer", json={"inputs": [tensor]})
        assert v2.status_code == 413
        # declared, not sent: refused by its shape before its data is looked at
        tensor = {"name": "input", "shape": [2**40, 4], "datatype": "FP32", "data": []}
        assert client.post("/v2/models/iris/infer", json={"inputs": [tensor]}).status_code == 413


@pytest.mark.parametrize(
    ("data", "shape", "fragment"),
    [
        ([[1, 2, 3, 4], [5, 6, 7]], [2, 4], "rectangular"),
        ([[1, 2, 3, 4], 5, 6, 7, 8], [2, 4], "rectangular"),
        ([[[1, 2, 3, 4]], [[5, 6, 7, 8]]], [2, 4], "rectangular"),
        ([1, 2, 3, [4]], [1, 4], "wrong type"),
        ([[1, 2], [3, 4]], [4], "shape [4]"),
    ],
)
def test_nesting_must_follow_the_shape(
    iris_client: AppClient, data: list[Any], shape: list[int], fragment: str
) -> None:
    tensor = {"name": "input", "shape": shape, "datatype": "FP32", "data": data}
    answer = iris_client.post("/v2/models/iris/infer", json={"inputs": [tensor]})
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]


def test_more_inputs_than_a_model_takes_are_refused_unread(churn_client: AppClient) -> None:
    tensors = [{"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [1]} for i in range(9)]
    answer = churn_client.post("/v2/models/churn/infer", json={"inputs": tensors})
    assert answer.status_code == 400
    assert "takes at most 3" in answer.json()["error"]


# -- bounded validation, and its errors equal to the validator's ------------------------------

SMALL = Signature(
    inputs=(
        Column("a", "float32"),
        Column("b", "int32"),
        Column("c", "string"),
        Column("d", "bool"),
    ),
    outputs=(Output("label", "string"),),
    classes=("x", "y"),
    task="classification",
)
CODEC = Codec(SMALL, "small")
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.sampled_from([1e39, 2**31]),
    st.lists(st.integers(min_value=-9, max_value=9), max_size=2),
)
record = st.one_of(
    st.fixed_dictionaries({n: values for n in "abcd"}),
    st.dictionaries(st.sampled_from([*"abcdef"]), values, max_size=6),
    values,
)
bodies = st.one_of(record, st.lists(record, max_size=30))


def _pydantic_errors(body: bytes) -> list[dict[str, Any]] | None:
    adapter = CODEC.schema.many if body.lstrip()[:1] == b"[" else CODEC.schema.one
    try:
        adapter.validate_json(body)
    except ValidationError as exc:
        return exc.errors(include_url=False, include_context=False)  # type: ignore[return-value]
    return None


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_bounded_errors_are_the_validators_own(doc: Any) -> None:
    """For bodies small enough to validate whole, the bounded validation reports exactly the
    validator's errors (type, location, message, echoed input), the first MAX_ERRORS of them,
    in order, and says when there were more."""
    from modelcrate.serve.validation import MAX_ERRORS, InvalidRecords, clip

    body = orjson.dumps(doc)
    expected = _pydantic_errors(body)
    failure: InvalidRecords | None = None
    try:
        _, single = CODEC.schema.validator.validate_json(body, 0)
    except InvalidRecords as exc:
        failure = exc
    if failure is None:
        assert expected is None
        assert single == (type(doc) is not list)
        return
    assert expected is not None
    shown_errors = expected[:MAX_ERRORS]
    assert [(e["type"], list(e["loc"]), e["msg"]) for e in failure.errors] == [
        (e["type"], list(e["loc"]), e["msg"]) for e in shown_errors
    ]
    assert [e["input"] for e in failure.errors] == [clip(e["input"]) for e in shown_errors]
    assert failure.more == (len(expected) > MAX_ERRORS)


def test_many_unknown_keys_are_reported_without_the_validator_seeing_them() -> None:
    from modelcrate.serve.validation import MAX_ERRORS, InvalidRecords, TooManyRecords

    body = orjson.dumps({"a": 1.0, **{f"k{i}": i for i in range(100_000)}})
    with pytest.raises(InvalidRecords) as info:
        CODEC.schema.validator.validate_json(body, 0)
    errors = info.value.errors
    assert len(errors) == MAX_ERRORS
    assert info.value.more
    assert [e["loc"] for e in errors[:3]] == [["b"], ["c"], ["d"]]  # the fields missing first
    assert errors[3] == {
        "type": "extra_forbidden",
        "loc": ["k0"],
        "msg": "Extra inputs are not permitted",
        "input": 0,
    }
    with pytest.raises(TooManyRecords):
        CODEC.schema.validator.validate_json(orjson.dumps([{}] * 11), 10)


def test_an_echoed_input_is_clipped_to_a_budget() -> None:
    from modelcrate.serve.validation import CLIP_BUDGET, clip, shown

    huge = {
        "x" * 10_000: ["y" * 10_000] * 10_000,
        **{f"k{i}": {"z": [1] * 1000} for i in range(500)},
    }
    clipped = clip(huge)
    assert len(json.dumps(clipped)) < 4 * CLIP_BUDGET
    assert clipped["..."] == "491 more keys"
    assert clip("short") == "short"
    assert clip(12.5) == 12.5
    assert len(shown("n" * 1_000_000)) < 200
    assert len(shown(list(range(1_000_000)))) < 200


# -- the limits middleware: slow bodies ------------------------------------------------------


def _scope(path: str = "/predict") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_request_still_sending_its_body_holds_no_slot() -> None:
    """max_concurrency 1: one client stalls inside its body. Before, it held the one slot and
    the next client got 503."""
    gate = Gate(Limits(max_concurrency=1, timeout_s=0))
    mw = LimitsMiddleware(_ok, gate)
    sent: list[Message] = []

    async def stalled_receive() -> Message:
        if not sent:
            sent.append({"type": "marker"})
            return {"type": "http.request", "body": b"{", "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError

    async def complete() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    answers: list[Message] = []

    async def collect(message: Message) -> None:
        answers.append(message)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mw, _scope(), stalled_receive, collect)
            await anyio.sleep(0.05)
            assert gate.in_flight == 0
            await mw(_scope(), complete, collect)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert answers[0]["status"] == 200


def test_a_body_not_in_within_the_time_limit_is_a_408_that_closes() -> None:
    gate = Gate(Limits(timeout_s=0.05))
    mw = LimitsMiddleware(_ok, gate)
    sent: list[Message] = []

    async def receive() -> Message:
        if not sent:
            sent.append({"type": "marker"})
            return {"type": "http.request", "body": b"{", "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError

    answers: list[Message] = []

    async def collect(message: Message) -> None:
        answers.append(message)

    anyio.run(mw, _scope(), receive, collect)
    assert answers[0]["status"] == 408
    assert (b"connection", b"close") in answers[0]["headers"]
    assert "did not arrive within 0.05 s" in orjson.loads(answers[1]["body"])["error"]
    assert (gate.timed_out, gate.in_flight, gate.answered) == (1, 0, 1)


# -- the protocol: backpressure and header limits, byte by byte ------------------------------


class Slow(Transport):
    """A socket to a client that reads nothing: the kernel takes answers into its buffer (a
    little more each tick, as its buffer grows, up to 4 MiB), the rest waits in the
    transport, whose writes pause past 64 KiB and resume below 16 KiB."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.kernel = 0  # bytes the kernel took
        self.capacity = 0
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        self.drain()

    def tick(self) -> None:
        self.capacity = min(self.capacity + 65536, 4 * 1024 * 1024)
        self.drain()

    def drain(self) -> None:
        self.kernel = min(len(self.buffer), self.capacity)
        waiting = self.get_write_buffer_size()
        if waiting > 65536 and not self.paused:
            self.paused = True
            self.protocol.pause_writing()
        elif waiting < 16384 and self.paused:
            self.paused = False
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self.buffer) - self.kernel


def test_a_client_that_takes_no_answers_is_not_read_on(iris: Built) -> None:
    """Pipelined requests, fed only while the protocol reads, never read back. Before, every
    answer resumed reading and each read queued more requests (hundreds, with their bodies);
    now at most MAX_PIPELINED wait, and reading stops while writes are paused."""
    max_pipelined = 8  # serve.protocol.MAX_PIPELINED
    app = _app(iris)
    stream = _request(orjson.dumps(records(iris, slice(0, 1)) * 600)) * 400

    async def main() -> tuple[int, int, int]:
        async with app.lifespan():
            h = Harness(app)
            protocol = h.protocol(config=h.config, server_state=h.state, app_state={})
            transport = Slow()
            transport.protocol = protocol
            protocol.connection_made(transport)
            fed = most = 0
            for _ in range(400):
                if transport.reading and fed < len(stream):
                    protocol.data_received(stream[fed : fed + 262144])
                    fed += 262144
                most = max(most, len(protocol.pipeline))
                await asyncio.sleep(0.002)
                transport.tick()
            answered = len(_responses(transport.buffer))
            protocol.connection_lost(None)
            return fed, most, answered

    fed, most, answered = asyncio.run(main())
    assert answered >= 10
    assert most <= max_pipelined + 5  # and what one read holds beyond the limit
    # what was read: the answered requests, those queued, one read more
    assert fed <= (answered + most + 5) * len(stream) // 400 + 262144


def test_the_fast_path_waits_while_writes_are_paused(iris: Built) -> None:
    app = _app(iris)
    body = orjson.dumps(records(iris, slice(0, 1))[0])

    async def main() -> None:
        async with app.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            protocol.pause_writing()
            protocol.data_received(_request(body))
            await asyncio.sleep(0.05)
            assert _responses(transport.buffer) == []  # the ASGI path waits for the drain
            assert h.counting.calls == 1
            assert not transport.reading
            protocol.resume_writing()
            status, _, _ = (await h.until(transport, 1))[0]
            assert status == 200
            assert transport.reading

    asyncio.run(main())


@pytest.mark.parametrize("piece", [1, 1000, 70_000])
def test_a_header_section_over_the_limit_is_a_431(iris: Built, piece: int) -> None:
    """The same oversized header whether it arrives at once or a byte at a time."""
    app = _app(iris)
    max_header_bytes = 64 * 1024  # serve.limits.MAX_HEADER_BYTES
    data = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * (max_header_bytes + 10)
    data += b"\r\n\r\n"

    async def main() -> None:
        async with app.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            for i in range(0, len(data), piece):
                if transport.closed:
                    break
                protocol.data_received(data[i : i + piece])
            assert transport.closed
            (status, headers, _), *_ = _responses(transport.buffer)
            assert status == 431
            assert headers["connection"] == "close"
            assert h.counting.calls == 0

    asyncio.run(main())


def test_the_limits_name_their_defaults() -> None:
    from modelcrate.serve.limits import MAX_HEADER_BYTES
    from modelcrate.serve.protocol import MAX_PIPELINED

    assert MAX_HEADER_BYTES == 64 * 1024  # as the tests above assume
    assert MAX_PIPELINED == 8


def _codec(dtype: str) -> Any:
    from modelcrate.serve.v2 import V2Codec

    sig = Signature(
        inputs=tuple(Column(f"c{i}", dtype) for i in range(4)),  # type: ignore[arg-type]
        outputs=(Output("prediction", "float32"),),
        task="regression",
        tensor_input=True,
        tensor_dtype=dtype,  # type: ignore[arg-type]
    )
    return V2Codec(ModelInfo(name="m", version="sha256:" + "ef" * 32, signature=sig))


ODD = st.sampled_from(
    [None, True, False, "3", "x", [1], {}, 1e39, -3.5e38, 1.5e308, 2**31, 2**63 - 1, 2**64 - 1]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["float32", "float64", "int32", "int64"]),
    st.lists(st.one_of(st.integers(-9, 9), st.floats(-1e6, 1e6)), min_size=80, max_size=80),
    st.lists(st.tuples(st.integers(0, 79), ODD), max_size=2),
)
def test_numbers_read_by_numpy_agree_with_the_value_by_value_check(
    dtype: str, data: list[Any], odd: list[tuple[int, Any]]
) -> None:
    """Large numeric tensors are read by NumPy unless the request holds JSON true/false; the
    verdict (and the values) must be those of the value-by-value check."""
    from modelcrate.serve.v2 import V2Error

    for i, value in odd:
        data[i] = value
    codec = _codec(dtype)
    datatype = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}[dtype]
    doc: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [20, 4], "datatype": datatype, "data": data}]
    }

    def verdict(body: bytes) -> tuple[str, Any]:
        try:
            return "ok", codec.parse_request(body).inputs["input"]
        except V2Error as exc:
            return "error", exc.status

    plain = orjson.dumps(doc)
    literal = orjson.dumps(doc | {"parameters": {"flag": True}})  # value by value
    fast, exact = verdict(plain), verdict(literal)
    if any(isinstance(v, bool) for v in data):
        assert exact == ("error", 400)
        return
    assert fast[0] == exact[0], (fast, exact)
    if fast[0] == "ok":
        assert fast[1].dtype == exact[1].dtype
        np.testing.assert_array_equal(fast[1], exact[1])
    else:
        assert fast == exact


def test_the_fast_paths_503_is_the_asgi_paths(iris: Built) -> None:
    """A request that completes its body while the server is at its concurrency limit: the
    fast path answers the limits middleware's 503, byte for byte."""
    from tests.serve.test_protocol import _asgi_answer

    body = orjson.dumps(records(iris, slice(0, 1))[0])

    async def main() -> None:
        fast = _app(iris, max_concurrency=1)
        ref = _app(iris, max_concurrency=1)
        async with fast.lifespan(), ref.lifespan():
            fast.gate.in_flight = ref.gate.in_flight = 1  # one request being handled
            h = Harness(fast)
            protocol, transport = h.connect()
            protocol.data_received(_request(body))
            status, headers, answer = (await h.until(transport, 1))[0]
            assert h.counting.calls == 0  # answered by the fast path itself
            assert (status, answer) == await _asgi_answer(ref, body)
            assert status == 503
            assert headers["retry-after"] == "1"
            fast.gate.in_flight = ref.gate.in_flight = 0

    asyncio.run(main())
