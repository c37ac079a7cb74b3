"""The HTTP fast path: ``POST /predict`` answered inside uvicorn's HTTP protocol, no ASGI task.

Through ASGI, every request costs a task, a scope, message dicts, two writes and the
middlewares: more than predicting one row. :func:`fast_protocol` subclasses uvicorn's httptools
protocol so that a plain ``POST /predict`` (HTTP/1.1, a ``Content-Length`` within the limits,
no ``Expect: 100-continue``, the connection not pipelining, the model ready and batching on)
is parsed as it arrives, queued on the adaptive batcher when its last byte is read, and
answered with one write when its batch ran: every request read in one event-loop iteration
shares one model call. Everything else goes through uvicorn to the ASGI app unchanged
(``serve.fast``), including every error case the fast path does not take on.

The answers are the ASGI path's: the same handler steps (``Handlers.predict_parse``,
``predict_reply``, ``predict_error``), the same headers as uvicorn writes (its default
``date``/``server`` headers, ``content-type``, ``content-length``, ``connection: close`` when
the connection ends), the same accounting (the limits' gate, the metrics, uvicorn's request
count and access log) and the same time limit (504). A graceful shutdown waits for them:
uvicorn's ``shutdown()`` sees the pending request as the connection's current cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # no httptools: uvicorn serves with h11, without the fast path
    STATUS_LINE = {}
    HttpToolsProtocol = None  # type: ignore[assignment, misc]

from modelcrate.serve.batching import BatchError
from modelcrate.serve.codec import PredictionFailed
from modelcrate.serve.handlers import Reply
from modelcrate.serve.state import NotReady

if TYPE_CHECKING:
    from modelcrate.serve.fast import ServingApp

log = logging.getLogger("modelcrate.serve")

FAST_MAX_BODY = 64 * 1024  # larger requests take the ASGI path (a thread may predict them)
ROUTE = "/predict"


class _NoEvent:
    def set(self) -> None:
        pass


class _Pending:
    """A fast request: stands in for uvicorn's request cycle while it is read and answered."""

    __slots__ = (
        "body",
        "deadline",
        "disconnected",
        "future",
        "keep_alive",
        "message_event",
        "response_complete",
        "started",
    )

    def __init__(self, keep_alive: bool) -> None:
        self.body = bytearray()
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NoEvent()  # uvicorn's connection_lost() sets it
        self.started = 0.0
        self.deadline = 0.0
        self.future: asyncio.Future[Any] | None = None


# what the subclass overrides or calls of uvicorn's protocol (checked, not assumed)
_USED = (
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "connection_lost",
    "shutdown",
)


def fast_protocol_supported() -> bool:
    """Whether the installed uvicorn has the httptools protocol the fast path extends."""
    return HttpToolsProtocol is not None and all(hasattr(HttpToolsProtocol, m) for m in _USED)


def fast_protocol(app: ServingApp) -> type[HttpToolsProtocol]:
    """Uvicorn's httptools protocol with ``POST /predict`` of ``app`` answered in place."""
    handlers = app.handlers
    state = app.serving
    gate = app.gate
    metrics = state.metrics
    limits = gate.limits
    max_body = min(FAST_MAX_BODY, limits.max_body_bytes or FAST_MAX_BODY)
    timeouts = _Timeouts(limits.timeout_s, gate) if limits.timeout_s else None

    class FastProtocol(HttpToolsProtocol):
        _fast: _Pending | None = None

        # -- parsing: take the request, or leave it to uvicorn ---------------------------

        def on_headers_complete(self) -> None:
            self._fast = None
            if self._takes_fast_path():
                pending = _Pending(self.parser.should_keep_alive())
                self.cycle = pending  # type: ignore[assignment]  # what shutdown() looks at
                self._fast = pending
                # accepted now, as the ASGI path counts a request whose app has started
                gate.accepted += 1
                gate.in_flight += 1
                metrics.in_flight += 1
                pending.started = time.perf_counter()
                return
            super().on_headers_complete()

        def _takes_fast_path(self) -> bool:
            parser = self.parser
            if (
                self.url != b"/predict"
                or parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"
                or self.expect_100_continue
                or parser.should_upgrade()
                or not state.ready
                or state.batcher is None
                or (self.cycle is not None and not self.cycle.response_complete)  # pipelined
                or (limits.max_concurrency and gate.in_flight >= limits.max_concurrency)
            ):
                return False
            length = -1
            for name, value in self.headers:
                if name == b"content-length":
                    length = int(value) if value.isdigit() else -1
                elif name == b"transfer-encoding":
                    return False
            return 0 <= length <= max_body

        def on_body(self, body: bytes) -> None:
            if self._fast is not None:
                self._fast.body += body
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            pending = self._fast
            if pending is None:
                super().on_message_complete()
                return
            self._fast = None
            self._dispatch(pending)

        # -- predicting --------------------------------------------------------------------

        def connection_lost(self, exc: Exception | None) -> None:
            pending = self._fast
            if pending is not None:  # the client left before sending the whole body
                self._fast = None
                pending.response_complete = True
                gate.in_flight -= 1
                metrics.in_flight -= 1
            super().connection_lost(exc)

        def _dispatch(self, pending: _Pending) -> None:
            try:
                parsed = handlers.predict_parse(bytes(pending.body))
                if isinstance(parsed, Reply):
                    self._respond(pending, parsed)
                    return
                batcher = state.batcher
                if not state.ready or batcher is None:
                    self._respond(pending, handlers.predict_error(NotReady(state.reason)))
                    return
                inputs, rows, single = parsed
                future = batcher.enqueue(inputs, rows)
            except Exception as exc:  # a bug: answer 500 as the ASGI path would
                log.exception("prediction failed")
                self._respond(pending, handlers.predict_error(PredictionFailed(str(exc))))
                return
            pending.future = future
            future.add_done_callback(partial(self._predicted, pending, rows, single))
            if timeouts is not None:
                timeouts.watch(pending, partial(self._respond, pending))

        def _predicted(
            self, pending: _Pending, rows: int, single: bool, future: asyncio.Future[Any]
        ) -> None:
            if future.cancelled():  # timed out: answered already
                return
            exc = future.exception()
            if exc is None:
                metrics.observe_rows(rows)
                reply = handlers.predict_reply(future.result(), rows, single)
            elif isinstance(exc, NotReady | PredictionFailed):
                reply = handlers.predict_error(exc)
            elif isinstance(exc, BatchError):
                reply = handlers.predict_error(PredictionFailed(str(exc)))
            else:
                log.error("prediction failed: %s: %s", type(exc).__name__, exc)
                failed = PredictionFailed(f"{type(exc).__name__}: {exc}")
                reply = handlers.predict_error(failed)
            self._respond(pending, reply)

        # -- answering ---------------------------------------------------------------------

        def _respond(self, pending: _Pending, reply: Reply) -> None:
            if pending.response_complete:
                return
            pending.response_complete = True
            if timeouts is not None:
                timeouts.forget(pending)
            status = reply.status
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += (name, b": ", value, b"\r\n")
            content += (
                b"content-type: ",
                reply.content_type,
                b"\r\ncontent-length: ",
                str(len(reply.body)).encode(),
                b"\r\n",
            )
            for name, value in reply.headers or ():
                content += (name, b": ", value, b"\r\n")
            if not pending.keep_alive:
                content.append(b"connection: close\r\n")
            content += (b"\r\n", reply.body)
            transport = self.transport
            if not transport.is_closing():
                transport.write(b"".join(content))
            gate.in_flight -= 1
            gate.answered += 1
            metrics.in_flight -= 1
            metrics.record(ROUTE, "POST", status, time.perf_counter() - pending.started)
            if self.access_log:
                client = "%s:%d" % self.client if self.client else "-"  # noqa: UP031
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d', client, "POST", ROUTE, "1.1", status
                )
            if not pending.keep_alive and not transport.is_closing():
                transport.close()
            # uvicorn's bookkeeping: count the request, resume reading, start a pipelined
            # request queued behind this one, or arm the keep-alive timer
            self.on_response_complete()

    return FastProtocol


class _Timeouts:
    """The request time limit for fast requests: one periodic sweep, no timer per request."""

    def __init__(self, timeout: float, gate: Any) -> None:
        self.timeout = timeout
        self.gate = gate
        self.tick = min(1.0, max(0.005, timeout / 10))
        self.pending: dict[_Pending, Any] = {}
        self.scheduled = False
        self.body = Reply.error(504, f"the request took longer than {timeout:g} s")

    def watch(self, pending: _Pending, respond: Any) -> None:
        pending.deadline = time.monotonic() + self.timeout
        self.pending[pending] = respond
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def forget(self, pending: _Pending) -> None:
        self.pending.pop(pending, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        late = [p for p in self.pending if p.deadline <= now]
        for pending in late:
            respond = self.pending.pop(pending)
            if pending.future is not None:
                pending.future.cancel()  # out of the batcher's queue if its batch has not run
            self.gate.timed_out += 1
            respond(self.body)
        if self.pending:
            asyncio.get_running_loop().call_later(self.tick, self._sweep)
        else:
            self.scheduled = False
