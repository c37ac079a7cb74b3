"""Request limits: body size (413), concurrency (503 + Retry-After), time (504).

The middleware is driven directly (a tiny ASGI app, a counted ``receive``) where the test must
see what was read or hold requests open; the real app (over the iris crate) checks the wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from modelcrate.serve.app import build_app
from modelcrate.serve.limits import LIMITS_ENV, Gate, Limits, LimitsMiddleware
from modelcrate.serve.model import open_predictor, read_model_info
from tests.serve.asgi import AppClient
from tests.serve.crates import Built, records


def _scope(path: str = "/predict", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": headers or []}


async def _call(
    mw: LimitsMiddleware, scope: Scope, chunks: list[bytes]
) -> tuple[list[Message], int]:
    """Run one request; the messages sent, and how many body chunks the app pulled."""
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            more = pulled < len(chunks)
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": more}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    return sent, pulled


def _status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def _body(sent: list[Message]) -> Any:
    return orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": orjson.dumps({"size": size})})


def test_declared_body_over_the_limit_is_refused_unread() -> None:
    gate = Gate(Limits(max_body_bytes=100))
    mw = LimitsMiddleware(_echo, gate)
    scope = _scope(headers=[(b"content-length", b"101")])
    sent, pulled = anyio.run(_call, mw, scope, [b"x" * 101])
    assert _status(sent) == 413
    assert "100 bytes" in _body(sent)["error"]
    assert pulled == 0
    ok, _ = anyio.run(_call, mw, _scope(headers=[(b"content-length", b"100")]), [b"x" * 100])
    assert _status(ok) == 200
    assert _body(ok) == {"size": 100}
    assert (gate.accepted, gate.answered, gate.refused, gate.in_flight) == (2, 2, 1, 0)


def test_chunked_body_is_cut_at_the_limit() -> None:
    gate = Gate(Limits(max_body_bytes=100))
    mw = LimitsMiddleware(_echo, gate)
    chunks = [b"x" * 40] * 10  # 400 bytes, no Content-Length
    sent, pulled = anyio.run(_call, mw, _scope(), chunks)
    assert _status(sent) == 413
    assert "error" in _body(sent)
    assert pulled == 3  # 120 bytes: the first chunk past the limit, and nothing after it
    ok, _ = anyio.run(_call, mw, _scope(), [b"x" * 50, b"y" * 50])
    assert _body(ok) == {"size": 100}


def test_an_app_that_answers_an_unreadable_body_still_gets_413() -> None:
    async def swallow(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receive()
            await receive()
        except Exception:  # a framework turning the read error into its own 400
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    mw = LimitsMiddleware(swallow, Gate(Limits(max_body_bytes=10)))
    sent, _ = anyio.run(_call, mw, _scope(), [b"x" * 8, b"x" * 8])
    assert [_status(sent), len(sent)] == [413, 2]


def test_concurrency_limit_answers_503_with_retry_after() -> None:
    release = anyio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = Gate(Limits(max_concurrency=2, timeout_s=0))
    mw = LimitsMiddleware(held, gate)
    results: list[list[Message]] = []

    async def one(path: str = "/predict") -> None:
        sent, _ = await _call(mw, _scope(path), [b""])
        results.append(sent)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
            await anyio.sleep(0.05)
            assert gate.in_flight == 2
            await one()  # refused at once, while the two are held
            assert _status(results[0]) == 503
            tg.start_soon(one, "/readyz")  # probes are never refused
            await anyio.sleep(0.05)
            assert gate.in_flight == 3
            release.set()

    anyio.run(main)
    refused = results[0]
    assert dict(refused[0]["headers"])[b"retry-after"] == b"1"
    assert "concurrency" in _body(refused)["error"]
    assert sorted(_status(r) for r in results) == [200, 200, 200, 503]
    assert (gate.accepted, gate.answered, gate.in_flight) == (4, 4, 0)


def test_slow_request_times_out_with_504_and_probes_do_not() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = Gate(Limits(timeout_s=0.05))
    mw = LimitsMiddleware(slow, gate)
    sent, _ = anyio.run(_call, mw, _scope(), [b""])
    assert _status(sent) == 504
    assert "0.05 s" in _body(sent)["error"]
    probe, _ = anyio.run(_call, mw, _scope("/healthz"), [b""])
    assert _status(probe) == 200
    assert (gate.timed_out, gate.answered, gate.in_flight) == (1, 2, 0)


def test_limits_travel_to_workers_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = Limits(1234, 7, 2.5, max_rows=99, read_timeout_s=0.5, max_connections=12)
    monkeypatch.setenv(LIMITS_ENV, limits.to_env())
    assert Limits.from_env() == limits
    monkeypatch.setenv(LIMITS_ENV, "1234,7,2.5")  # what an older parent process sets
    assert Limits.from_env() == Limits(1234, 7, 2.5)
    monkeypatch.delenv(LIMITS_ENV)
    assert Limits.from_env() == Limits(8 * 1024 * 1024, 256, 30.0, 65_536, 10.0, 2048)


@pytest.fixture(scope="module")
def limited(iris: Built) -> Iterator[AppClient]:
    info = read_model_info(iris.crate_dir)
    app = build_app(info, lambda: open_predictor(info), Limits(max_body_bytes=2000))
    with AppClient(app) as client:
        yield client


def test_the_app_refuses_large_bodies_and_counts_them(limited: AppClient, iris: Built) -> None:
    small = records(iris, slice(0, 2))
    assert limited.post("/predict", json=small).status_code == 200
    big = records(iris, slice(0, 100))
    response = limited.post("/predict", json=big)
    assert response.status_code == 413
    assert response.json()["error"].startswith("the request body is larger than 2000 bytes")

    async def chunks() -> AsyncIterator[bytes]:
        body = orjson.dumps(big)
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    chunked = limited.post("/predict", content=chunks())
    assert chunked.status_code == 413
    v2 = limited.post("/v2/models/iris/infer", content=b" " * 3000)
    assert v2.status_code == 413
    metrics = limited.get("/metrics").text
    # refused unread (declared), or cut while read: both before routing (the body is read
    # before the request is routed)
    assert 'method="POST",route="unmatched",status="413"} 3.0' in metrics
    gate: Gate = limited.app.gate
    assert (gate.accepted, gate.answered, gate.refused, gate.in_flight) == (5, 5, 3, 0)
