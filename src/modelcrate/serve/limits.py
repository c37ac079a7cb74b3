"""Request limits of one server process: body size (413), concurrency (503), time (408/504).

:class:`LimitsMiddleware` is plain ASGI, like the metrics middleware. Its hot path is a scan of
the request headers for ``Content-Length``, two integer updates and, when a timeout is set, a
dict entry for the timeout watchdog (the server runs on asyncio). A declared ``Content-Length``
over the limit is refused before a byte of the body is read; a body without one (chunked) is
counted as it arrives and refused as soon as it passes the limit, so no more than the limit is
ever read. Probes (``/healthz``, ``/readyz``, ``/metrics``) are never refused for concurrency
nor timed out: an overloaded server stays observable.

The body is read before the request takes a concurrency slot: a client that sends headers and
then stalls holds a connection, never a slot (so stalled clients cannot make everyone else get
503). The time limit starts with the request, so it covers reading the body: a body not in by
then is answered 408 and the connection closed; a request whose answer is late, 504. The HTTP
protocol (``serve.protocol``) adds what only a connection can see: header size and count (431),
header and body stalls (408, ``read_timeout_s``), the number of connections and backpressure.

:class:`Gate` holds the settings and counts every request that entered the app and every one
that was answered to the end; at shutdown the app logs both, so an operator (and the graceful
shutdown test) can see that no accepted request was cut off.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMITS_ENV = "MODELCRATE_SERVE_LIMITS"  # Limits.to_env(), for workers
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 256
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 65_536
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 2048
MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one request (431 above)
MAX_HEADERS = 100  # header fields of one request (431 above)
RETRY_AFTER_S = 1
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_JSON_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
_RETRY_HEADERS = [*_JSON_HEADERS, (b"retry-after", str(RETRY_AFTER_S).encode())]
_CLOSE_HEADERS = [*_JSON_HEADERS, (b"connection", b"close")]


@dataclass(frozen=True)
class Limits:
    """``0`` turns a limit off.

    - ``max_body_bytes``: the largest request body (413);
    - ``max_concurrency``: requests handled at once, counted from when their body is complete
      (503 with ``Retry-After``);
    - ``timeout_s``: the time limit of a request from its headers, reading its body included
      (408 for a body not in by then, 504 for an answer that is late);
    - ``max_rows``: records, instances or tensor rows in one request (413);
    - ``read_timeout_s``: how long a client may stall: before it completes a request's
      headers, between two parts of a body, or before it takes our answer off the socket
      (408 or the connection closed);
    - ``max_connections``: open connections; above it, the connection that stalled the
      longest (or sat idle between requests) is closed for the new one.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_rows: int = DEFAULT_MAX_ROWS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def to_env(self) -> str:
        return ",".join(str(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def from_env(cls) -> Limits:
        """The limits set by ``modelcrate serve`` for its worker processes, else the defaults."""
        raw = os.environ.get(LIMITS_ENV)
        if not raw:
            return cls()
        values: dict[str, Any] = {}
        for f, text in zip(fields(cls), raw.split(","), strict=False):
            values[f.name] = float(text) if f.name.endswith("_s") else int(text)
        return cls(**values)


@dataclass
class Gate:
    """The limits and the counters the middleware keeps (one event loop: plain integers)."""

    limits: Limits = field(default_factory=Limits)
    in_flight: int = 0
    accepted: int = 0  # requests that entered the app
    answered: int = 0  # requests whose response was sent to the end
    refused: int = 0  # 413 and 503 answered by the limits themselves
    timed_out: int = 0
    dropped: int = 0  # the client left, or was too slow, before its request was complete

    def summary(self) -> str:
        cut_off = self.accepted - self.answered - self.dropped
        return (
            f"{self.accepted} request(s) accepted, {self.answered} answered, "
            f"{cut_off} cut off, {self.refused} refused by limits, {self.timed_out} timed out, "
            f"{self.dropped} dropped before their body was in"
        )


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected (or was disconnected) before its body was complete."""


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate
        limits = gate.limits
        self.max_body = limits.max_body_bytes
        self.max_concurrency = limits.max_concurrency
        self.timeout = limits.timeout_s
        self.body_error = _error(f"the request body is larger than {self.max_body} bytes")
        self.busy_error = _error("the server is at its concurrency limit; retry later")
        self.timeout_error = _error(f"the request took longer than {self.timeout:g} s")
        self.slow_error = _error(f"the request body did not arrive within {self.timeout:g} s")
        self.watchdog = _Watchdog(self.timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self.gate
        gate.accepted += 1
        max_body = self.max_body
        declared = -1
        if max_body:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    declared = int(value) if value.isdigit() else -1
                    break
            if declared > max_body:
                await self._refuse(send, 413, self.body_error)
                return
        probe = scope["path"] in PROBES

        started = False
        finished = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif not message.get("more_body", False):
                finished = True
            await send(message)

        reading = True
        holding = False
        watchdog = self.watchdog
        task = watchdog.watch() if self.timeout and not probe else None
        try:
            # A declared length is enforced by the HTTP server (h11, httptools): count the rest.
            body = await _read_body(receive, max_body if declared < 0 else 0)
            reading = False
            if self.max_concurrency and not probe and gate.in_flight >= self.max_concurrency:
                await self._refuse(send, 503, self.busy_error, retry=True)
                return
            gate.in_flight += 1
            holding = True
            await self.app(scope, _replay(body, receive), guarded_send)
        except asyncio.CancelledError:
            if task is None or not watchdog.fired(task):
                raise
            gate.timed_out += 1
            if not started:
                started = finished = True
                if reading:  # the client's fault: its body is late; the connection ends
                    await _send_json(send, 408, self.slow_error, _CLOSE_HEADERS)
                else:
                    await _send_json(send, 504, self.timeout_error)
        except _BodyTooLarge:
            if not started:
                started = finished = True
                gate.refused += 1
                await _send_json(send, 413, self.body_error)
        except _ClientGone:
            gate.dropped += 1
        finally:
            if task is not None:
                watchdog.forget(task)
            if holding:
                gate.in_flight -= 1
            if finished:
                gate.answered += 1

    async def _refuse(self, send: Send, status: int, body: bytes, retry: bool = False) -> None:
        gate = self.gate
        gate.refused += 1
        headers = _RETRY_HEADERS if retry else _JSON_HEADERS
        await _send_json(send, status, body, headers)
        gate.answered += 1


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; more than ``limit`` bytes (0: no limit) raise
    :class:`_BodyTooLarge`, a disconnect :class:`_ClientGone`."""
    message = await receive()
    if message["type"] != "http.request":
        raise _ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if limit and len(body) > limit:
            raise _BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit and size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body read already, then the server's own (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _Watchdog:
    """Per-request time limits for a whole process at the cost of a dict entry per request: one
    periodic check cancels the tasks past their deadline (a timer per request, as
    ``asyncio.timeout`` sets, costs ten times more). Deadlines are kept to within a tenth of the
    timeout (at most 1 s late)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, max(0.005, timeout / 10))
        self.deadlines: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.scheduled = False

    def watch(self) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None, "the server runs on asyncio"
        self.deadlines[task] = time.monotonic() + self.timeout
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(self.tick, self._check)
        return task

    def fired(self, task: asyncio.Task[Any]) -> bool:
        """True (and the cancellation absorbed) when the watchdog cancelled ``task``."""
        if task in self.expired:
            self.expired.discard(task)
            task.uncancel()
            return True
        return False

    def forget(self, task: asyncio.Task[Any]) -> None:
        self.deadlines.pop(task, None)
        if task in self.expired:  # cancelled, but the app swallowed it and returned
            self.expired.discard(task)
            task.uncancel()

    def _check(self) -> None:
        now = time.monotonic()
        late = [task for task, deadline in self.deadlines.items() if deadline <= now]
        for task in late:
            del self.deadlines[task]
            self.expired.add(task)
            task.cancel()
        if self.deadlines:
            asyncio.get_running_loop().call_later(self.tick, self._check)
        else:
            self.scheduled = False


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = _JSON_HEADERS
) -> None:
    # content-type, content-length, then the others: the order the HTTP fast path writes
    length = (b"content-length", str(len(body)).encode())
    message = {"type": "http.response.start", "status": status}
    message["headers"] = [headers[0], length, *headers[1:]]
    await send(message)
    await send({"type": "http.response.body", "body": body})
