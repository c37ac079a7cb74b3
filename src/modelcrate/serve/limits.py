"""Request limits of one server process: body size (413), concurrency (503), time (504).

:class:`LimitsMiddleware` is plain ASGI, like the metrics middleware. Its hot path is a scan of
the request headers for ``Content-Length``, two integer updates and, when a timeout is set, a
dict entry for the timeout watchdog (the server runs on asyncio). A declared ``Content-Length``
over the limit is refused before a byte of the body is read; a body without one (chunked) is
counted as it arrives and refused as soon as it passes the limit, so no more than the limit is
ever read. Probes (``/healthz``, ``/readyz``, ``/metrics``) are never refused for concurrency
nor timed out: an overloaded server stays observable.

:class:`Gate` holds the settings and counts every request that entered the app and every one
that was answered to the end; at shutdown the app logs both, so an operator (and the graceful
shutdown test) can see that no accepted request was cut off.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMITS_ENV = "MODELCRATE_SERVE_LIMITS"  # "max_body_bytes,max_concurrency,timeout_s" for workers
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 256
DEFAULT_TIMEOUT_S = 30.0
RETRY_AFTER_S = 1
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Limits:
    """``0`` turns a limit off."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S

    def to_env(self) -> str:
        return f"{self.max_body_bytes},{self.max_concurrency},{self.timeout_s}"

    @classmethod
    def from_env(cls) -> Limits:
        """The limits set by ``modelcrate serve`` for its worker processes, else the defaults."""
        raw = os.environ.get(LIMITS_ENV)
        if not raw:
            return cls()
        body, concurrency, timeout = raw.split(",")
        return cls(int(body), int(concurrency), float(timeout))


@dataclass
class Gate:
    """The limits and the counters the middleware keeps (one event loop: plain integers)."""

    limits: Limits = field(default_factory=Limits)
    in_flight: int = 0
    accepted: int = 0  # requests that entered the app
    answered: int = 0  # requests whose response was sent to the end
    refused: int = 0  # 413 and 503 answered by the middleware itself
    timed_out: int = 0

    def summary(self) -> str:
        cut_off = self.accepted - self.answered
        return (
            f"{self.accepted} request(s) accepted, {self.answered} answered, "
            f"{cut_off} cut off, {self.refused} refused by limits, {self.timed_out} timed out"
        )


class _BodyTooLarge(Exception):
    pass


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
        if self.max_concurrency and not probe and gate.in_flight >= self.max_concurrency:
            await self._refuse(send, 503, self.busy_error, retry=True)
            return

        started = False
        finished = False
        too_large = False
        received = 0

        async def guarded_send(message: Message) -> None:
            nonlocal started, finished
            if too_large:  # the app answered a body it could not read: answer 413 instead
                if not started:
                    started = finished = True
                    gate.refused += 1
                    await _send_json(send, 413, self.body_error)
                return
            if message["type"] == "http.response.start":
                started = True
            elif not message.get("more_body", False):
                finished = True
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    too_large = True
                    raise _BodyTooLarge
            return message

        # A declared length is enforced by the HTTP server (h11, httptools): count only the rest.
        inner_receive = counted_receive if max_body and declared < 0 else receive
        gate.in_flight += 1
        try:
            if self.timeout and not probe:
                watchdog = self.watchdog
                task = watchdog.watch()
                try:
                    await self.app(scope, inner_receive, guarded_send)
                except asyncio.CancelledError:
                    if not watchdog.fired(task):
                        raise
                    gate.timed_out += 1
                    if not started:
                        started = finished = True
                        await _send_json(send, 504, self.timeout_error)
                finally:
                    watchdog.forget(task)
            else:
                await self.app(scope, inner_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                started = finished = True
                gate.refused += 1
                await _send_json(send, 413, self.body_error)
        finally:
            gate.in_flight -= 1
            if finished:
                gate.answered += 1

    async def _refuse(self, send: Send, status: int, body: bytes, retry: bool = False) -> None:
        gate = self.gate
        gate.refused += 1
        headers = _JSON_HEADERS
        if retry:
            headers = [*headers, (b"retry-after", str(RETRY_AFTER_S).encode())]
        await _send_json(send, status, body, headers)
        gate.answered += 1


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
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})
