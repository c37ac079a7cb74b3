"""The HTTP fast path (``serve.protocol``), driven byte by byte like uvicorn drives it: which
requests it takes, that its answers are the ASGI path's byte for byte, and the connection
rules it must keep (keep-alive, pipelining order, ``Connection: close``, HTTP/1.0, 100-continue,
chunked bodies, time limit, graceful shutdown)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from uvicorn import Config
from uvicorn.server import ServerState

from modelcrate.serve import build_app, open_predictor, read_model_info
from modelcrate.serve.fast import ServingApp
from modelcrate.serve.limits import Limits
from tests.serve.crates import Built, records


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.buffer = b""
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0  # every write is taken at once

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@dataclasses.dataclass
class Counting:
    """The ASGI app as uvicorn sees it, counting the HTTP requests that reach it."""

    app: ServingApp
    calls: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def _request(
    body: bytes, *, path: str = "/predict", extra: bytes = b"", version: bytes = b"1.1"
) -> bytes:
    head = b"POST " + path.encode() + b" HTTP/" + version + b"\r\nhost: t\r\n"
    head += b"content-type: application/json\r\n" + extra
    if b"transfer-encoding" not in extra:
        head += b"content-length: " + str(len(body)).encode() + b"\r\n"
    return head + b"\r\n" + body


def _responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        if status == 100:  # an interim "100 Continue": no headers, no body
            data = rest
            continue
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


class Harness:
    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self.counting = Counting(app)
        self.config = Config(
            self.counting, http=app.http_protocol, lifespan="off", log_level="warning"
        )
        self.state = ServerState()
        # what uvicorn's main loop keeps there (the date refreshed every second)
        self.state.default_headers = [
            (b"date", b"Thu, 26 Nov 2026 07:00:00 GMT"),
            (b"server", b"uvicorn"),
        ]
        self.protocol: Any = app.http_protocol

    def connect(self) -> tuple[Any, Transport]:
        protocol = self.protocol(config=self.config, server_state=self.state, app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        return protocol, transport

    @staticmethod
    async def until(transport: Transport, count: int, timeout: float = 5) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            got = _responses(transport.buffer)
            if len(got) >= count:
                return got
            assert time.monotonic() < deadline, f"{len(got)} of {count} responses"
            await asyncio.sleep(0.001)


def _app(built: Built, **limits: Any) -> ServingApp:
    info = read_model_info(built.crate_dir)
    predictor = open_predictor(info)
    return build_app(info, lambda: predictor, Limits(**limits) if limits else None)


async def _asgi_answer(app: ServingApp, body: bytes) -> tuple[int, bytes]:
    """What the ASGI path answers for ``body`` (no fast path involved)."""
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def test_fast_answers_equal_the_asgi_path_and_skip_it(iris: Built) -> None:
    app = _app(iris)
    ref = _app(iris)  # the ASGI path's answers, from another app: its counters stay apart
    good = orjson.dumps(records(iris, slice(0, 3)))
    one = orjson.dumps(records(iris, slice(5, 6))[0])
    bad = orjson.dumps([{"sepal length (cm)": True}])

    async def main() -> None:
        async with app.lifespan(), ref.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            for body in (good, one, bad):  # one keep-alive connection, one after the other
                before = len(_responses(transport.buffer))
                protocol.data_received(_request(body))
                status, headers, got = (await h.until(transport, before + 1))[-1]
                assert (status, got) == await _asgi_answer(ref, body)
                assert headers["content-type"] == "application/json"
                assert headers["date"] == "Thu, 26 Nov 2026 07:00:00 GMT"
                assert headers["server"] == "uvicorn"
                assert "connection" not in headers
            assert h.counting.calls == 0  # the ASGI app never saw them
            assert not transport.closed
            assert h.state.total_requests == 3
            metrics = app.serving.metrics.render()[0].decode()
            assert (
                'modelcrate_requests_total{method="POST",route="/predict",status="200"} 2.0'
                in metrics
            )
            assert (
                'modelcrate_requests_total{method="POST",route="/predict",status="422"} 1.0'
                in metrics
            )
            assert (app.gate.accepted, app.gate.answered, app.gate.in_flight) == (3, 3, 0)

    asyncio.run(main())


def test_pipelined_requests_are_answered_in_order(iris: Built) -> None:
    app = _app(iris)
    recs = records(iris, slice(0, 150))
    bodies = [orjson.dumps(recs[i]) for i in (0, 60, 120)]  # three different classes
    health = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n"

    async def main() -> None:
        async with app.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            protocol.data_received(
                b"".join([_request(bodies[0]), health, _request(bodies[1]), _request(bodies[2])])
            )
            got = await h.until(transport, 4)
            assert [s for s, _, _ in got] == [200, 200, 200, 200]
            assert orjson.loads(got[1][2]) == {"status": "ok"}
            expected = [orjson.loads((await _asgi_answer(app, b))[1])["label"] for b in bodies]
            assert [orjson.loads(got[i][2])["label"] for i in (0, 2, 3)] == expected
            assert len(set(expected)) == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    ("request_bytes", "fast"),
    [
        (lambda b: _request(b, extra=b"connection: close\r\n"), True),
        (lambda b: _request(b, version=b"1.0"), False),
        (lambda b: _request(b, extra=b"expect: 100-continue\r\n"), False),
        (lambda b: _request(b, path="/predict?x=1"), False),
        (
            lambda b: _request(
                b"%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n", extra=b"transfer-encoding: chunked\r\n"
            ),
            False,
        ),
    ],
    ids=["connection-close", "http-1.0", "expect-100", "query-string", "chunked"],
)
def test_connection_rules(iris: Built, request_bytes: Any, fast: bool) -> None:
    app = _app(iris)
    body = orjson.dumps(records(iris, slice(0, 2)))

    async def main() -> None:
        async with app.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            protocol.data_received(request_bytes(body))
            got = await h.until(transport, 1)
            status, headers, answer = got[-1]
            assert (status, answer) == await _asgi_answer(app, body)
            assert h.counting.calls == (0 if fast else 1)
            closing = b"connection: close" in request_bytes(body) or b"HTTP/1.0" in request_bytes(
                body
            )
            if closing:
                assert headers.get("connection") == "close"
                assert transport.closed

    asyncio.run(main())


def test_large_bodies_and_busy_servers_take_the_asgi_path(iris: Built) -> None:
    big = orjson.dumps(records(iris, slice(0, 150)) * 4)  # > 64 KiB
    assert len(big) > 64 * 1024
    app = _app(iris, max_body_bytes=10 * 1024 * 1024)

    async def main() -> None:
        async with app.lifespan():
            h = Harness(app)
            protocol, transport = h.connect()
            protocol.data_received(_request(big))
            status, _, answer = (await h.until(transport, 1))[0]
            assert status == 200
            assert len(orjson.loads(answer)) == 600
            assert h.counting.calls == 1
            app.serving.ready = False  # e.g. a failed warm-up: the ASGI path says why (503)
            protocol.data_received(_request(orjson.dumps(records(iris, slice(0, 1))[0])))
            status, _, answer = (await h.until(transport, 2))[1]
            assert status == 503
            assert h.counting.calls == 2

    asyncio.run(main())


class Slow:
    """A model that takes its time (in a worker thread: the batcher's threshold is set to 0)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.signature = inner.signature
        self.seconds = seconds

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return self.inner.predict(inputs)  # type: ignore[no-any-return]


def _slow_app(iris: Built, seconds: float, timeout_s: float) -> ServingApp:
    info = read_model_info(iris.crate_dir)
    inner = open_predictor(info)
    app = build_app(info, lambda: Slow(inner, seconds), Limits(timeout_s=timeout_s))
    return app


def test_the_time_limit_answers_504(iris: Built) -> None:
    app = _slow_app(iris, seconds=0.6, timeout_s=0.1)
    body = orjson.dumps(records(iris, slice(0, 1))[0])

    async def main() -> None:
        async with app.lifespan():
            assert app.serving.batcher is not None
            app.serving.batcher.inline_rows = 0  # every batch in a thread
            h = Harness(app)
            protocol, transport = h.connect()
            started = time.monotonic()
            protocol.data_received(_request(body))
            status, _, answer = (await h.until(transport, 1))[0]
            assert status == 504
            assert time.monotonic() - started < 0.55  # before the model's answer
            assert "longer than 0.1 s" in orjson.loads(answer)["error"]
            assert app.gate.timed_out == 1
            await asyncio.sleep(0.7)  # the late result is dropped, not written
            assert len(_responses(transport.buffer)) == 1

    asyncio.run(main())


def test_graceful_shutdown_finishes_a_pending_request_then_closes(iris: Built) -> None:
    app = _slow_app(iris, seconds=0.3, timeout_s=30)
    body = orjson.dumps(records(iris, slice(0, 1))[0])

    async def main() -> None:
        async with app.lifespan():
            assert app.serving.batcher is not None
            app.serving.batcher.inline_rows = 0
            h = Harness(app)
            protocol, transport = h.connect()
            protocol.data_received(_request(body))
            await asyncio.sleep(0.05)
            protocol.shutdown()  # what uvicorn calls on SIGTERM
            assert not transport.closed  # the request is still being answered
            status, headers, _ = (await h.until(transport, 1))[0]
            assert status == 200
            assert headers.get("connection") == "close"
            assert transport.closed

    asyncio.run(main())
