"""The server's HTTP protocol: uvicorn's httptools protocol with ``POST /predict`` answered in
place (no ASGI task), and the limits only a connection can enforce.

**The fast path.** Through ASGI, every request costs a task, a scope, message dicts, two
writes and the middlewares: more than predicting one row. :func:`fast_protocol` subclasses
uvicorn's httptools protocol so that a plain ``POST /predict`` (HTTP/1.1, a ``Content-Length``
within the limits, no ``Expect: 100-continue``, the connection not pipelining, the model ready
and batching on) is parsed as it arrives, queued on the adaptive batcher when its last byte is
read, and answered with one write when its batch ran: every request read in one event-loop
iteration shares one model call. Everything else goes through uvicorn to the ASGI app unchanged
(``serve.fast``), including every error case the fast path does not take on.

The answers are the ASGI path's: the same handler steps (``Handlers.predict_parse``,
``predict_reply``, ``predict_error``), the same headers as uvicorn writes (its default
``date``/``server`` headers, ``content-type``, ``content-length``, ``connection: close`` when
the connection ends), the same accounting (the limits' gate, the metrics, uvicorn's request
count and access log) and the same limits: a request takes a concurrency slot once its body is
complete (503 past ``max_concurrency``), and its time limit (504) counts from its headers. A
graceful shutdown waits for them: uvicorn's ``shutdown()`` sees the pending request as the
connection's current cycle.

**Hostile clients** (every connection, fast path or not):

- *headers*: at most ``MAX_HEADER_BYTES`` of request line and headers and ``MAX_HEADERS``
  fields (431, the connection closed); the parser never holds much more than that;
- *stalls*: a connection must complete a request's headers within ``read_timeout_s`` of its
  first byte (or of connecting), and a body may not pause longer than that nor take longer
  than ``timeout_s`` in all: 408 and the connection closed. Answers a client does not take
  off the socket for ``read_timeout_s`` end the connection too;
- *connections*: at most ``max_connections`` (and fewer than the process may open files);
  a new one closes the connection that has been stalled or idle the longest, so stalled
  clients never lock others out;
- *backpressure*: while the socket's write buffer is full (uvicorn's ``pause_writing``), the
  fast path takes no request (the ASGI path waits for the buffer to drain) and reading stops
  until it drains: a client that pipelines requests and never reads the answers costs about
  one buffer, not one answer per request.

One periodic sweep per process checks the deadlines (no timer per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.flow_control import FlowControl

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # no httptools: uvicorn serves with h11, without the fast path
    STATUS_LINE = {}
    HttpToolsProtocol = None  # type: ignore[assignment, misc]

from modelcrate.serve.batching import BatchError
from modelcrate.serve.codec import PredictionFailed
from modelcrate.serve.handlers import Reply
from modelcrate.serve.limits import MAX_HEADER_BYTES, MAX_HEADERS, RETRY_AFTER_S
from modelcrate.serve.metrics import UNMATCHED
from modelcrate.serve.state import NotReady

if TYPE_CHECKING:
    from modelcrate.serve.fast import ServingApp

log = logging.getLogger("modelcrate.serve")

FAST_MAX_BODY = 64 * 1024  # larger requests take the ASGI path (a thread may predict them)
ROUTE = "/predict"
FD_RESERVE = 64  # files kept for everything but connections (the model, logs, ...)
MAX_PIPELINED = 8  # requests read ahead on one connection while one is answered
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets

# where a connection's parser is: reading a request's head, reading its body, or done with it
# (the request is being answered, or the connection waits for the next one)
_HEAD, _BODY, _DONE = 1, 2, 3


class _NoEvent:
    def set(self) -> None:
        pass


class _HeadTooLarge(Exception):
    pass


class _Flow(FlowControl):
    """Uvicorn's flow control, with backpressure both ways: reading stops while the socket's
    write buffer is full, and while :data:`MAX_PIPELINED` requests wait on the connection.
    (Uvicorn resumes reading for every request it starts and every answer it ends: a client
    pipelining requests without reading the answers would otherwise be read on and on.)"""

    def __init__(self, transport: asyncio.Transport, pipeline: Any) -> None:
        super().__init__(transport)
        self._pipeline = pipeline

    def resume_reading(self) -> None:
        if self.write_paused or len(self._pipeline) >= MAX_PIPELINED:
            return  # resume_writing, or the end of an answer, tries again
        if not self._transport.is_closing():
            super().resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.resume_reading()


class _Pending:
    """A fast request: stands in for uvicorn's request cycle while it is read and answered."""

    __slots__ = (
        "began",
        "body",
        "deadline",
        "disconnected",
        "future",
        "holding",
        "keep_alive",
        "message_event",
        "response_complete",
        "started",
    )

    def __init__(self, keep_alive: bool, began: float) -> None:
        self.body = bytearray()
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NoEvent()  # uvicorn's connection_lost() sets it
        self.started = 0.0
        self.began = began  # monotonic time of its headers: its time limit counts from there
        self.deadline = 0.0
        self.holding = False  # holds a concurrency slot (from its last byte to its answer)
        self.future: asyncio.Future[Any] | None = None


# what the subclass overrides or calls of uvicorn's protocol (checked, not assumed)
_USED = (
    "connection_made",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "connection_lost",
    "shutdown",
    "pause_writing",
    "resume_writing",
    "send_400_response",
    "handle_websocket_upgrade",
    "_should_upgrade",
    "_unsupported_upgrade_warning",
    "_unset_keepalive_if_required",
    "_start_asgi_task",
)


def fast_protocol_supported() -> bool:
    """Whether the installed uvicorn has the httptools protocol the fast path extends."""
    return HttpToolsProtocol is not None and all(hasattr(HttpToolsProtocol, m) for m in _USED)


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to what this process may open (its file limit less
    :data:`FD_RESERVE`): past that limit, accepting fails for everyone. 0: no cap."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft in (resource.RLIM_INFINITY, -1) or soft <= 2 * FD_RESERVE:
        return max_connections
    room = soft - FD_RESERVE
    return min(max_connections, room) if max_connections else room


def fast_protocol(app: ServingApp) -> type[HttpToolsProtocol]:
    """Uvicorn's httptools protocol with ``POST /predict`` of ``app`` answered in place."""
    handlers = app.handlers
    state = app.serving
    gate = app.gate
    metrics = state.metrics
    limits = gate.limits
    max_body = min(FAST_MAX_BODY, limits.max_body_bytes or FAST_MAX_BODY)
    max_concurrency = limits.max_concurrency
    timeouts = _Timeouts(limits.timeout_s, gate) if limits.timeout_s else None
    read_timeout = limits.read_timeout_s
    body_time = limits.timeout_s
    guard = _Guard(read_timeout, body_time, connection_cap(limits.max_connections))
    busy = Reply.error(503, "the server is at its concurrency limit; retry later")
    busy.headers = [(b"retry-after", str(RETRY_AFTER_S).encode())]
    slow_head = f"the request headers did not arrive within {read_timeout:g} s"
    slow_body = (
        f"the request body did not arrive in time (a pause over {read_timeout:g} s, "
        f"or more than {body_time:g} s in all)"
    )
    too_large = (
        f"the request headers are too large (at most {MAX_HEADER_BYTES} bytes and "
        f"{MAX_HEADERS} fields)"
    )

    class FastProtocol(HttpToolsProtocol):
        _fast: _Pending | None = None
        _phase = _HEAD  # a new connection owes its first request's head
        _since = 0.0  # when the phase began, or the body last moved (monotonic)
        _began = 0.0  # when the current request's headers ended
        _now = 0.0  # when the data being parsed arrived
        _chunks = 0  # data_received calls
        _chunk_size = 0  # bytes of the last one
        _head_chunk = 0  # the call in which the current head began
        _head_fed = 0  # bytes of the current head after that call's
        _in_head = False  # a request's head has begun and is not complete
        _head_error = False
        _stall = 0.0  # when writes were paused (0: they are not)
        _running: Any = None  # the request cycle uvicorn runs (its ASGI task)

        # -- connections ---------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.flow = _Flow(transport, self.pipeline)
            self._since = time.monotonic()
            guard.arrived(self)

        def data_received(self, data: bytes) -> None:
            # uvicorn's, with the header limits (431) and the clock of the deadlines
            now = self._now = time.monotonic()
            self._chunks += 1
            self._chunk_size = len(data)
            if self._phase == _BODY:
                self._since = now  # the body moves
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if self._head_error:
                    self._close_with(431, too_large)
                    return
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            if self._in_head and self._head_chunk != self._chunks:
                # a head spread over several reads: httptools keeps its parts until the head
                # ends, so it is bounded here (to within one read) rather than at its end
                self._head_fed += len(data)
                if self._head_fed > MAX_HEADER_BYTES:
                    self._close_with(431, too_large)

        # -- parsing: take the request, or leave it to uvicorn ---------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._phase = _HEAD
            self._in_head = True
            self._since = self._now
            self._head_chunk = self._chunks
            self._head_fed = 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            if (
                self._head_chunk != self._chunks  # the head came in several reads
                or self._chunk_size > MAX_HEADER_BYTES
                or len(self.headers) > MAX_HEADERS
            ):
                self._check_head()
            self._phase = _BODY
            self._since = self._began = self._now
            self._fast = None
            if self._takes_fast_path():
                pending = _Pending(self.parser.should_keep_alive(), self._now)
                self.cycle = pending  # type: ignore[assignment]  # what shutdown() looks at
                self._fast = pending
                # accepted now, as the ASGI path counts a request whose app has started
                gate.accepted += 1
                metrics.in_flight += 1
                pending.started = time.perf_counter()
                return
            super().on_headers_complete()

        def _check_head(self) -> None:
            size = len(self.url) + sum(len(n) + len(v) for n, v in self.headers)
            if size > MAX_HEADER_BYTES or len(self.headers) > MAX_HEADERS:
                self._head_error = True
                raise _HeadTooLarge  # httptools stops; data_received answers 431

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
                or self.flow.write_paused  # the ASGI path waits for the socket to drain
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
            self._phase = _DONE
            pending = self._fast
            if pending is None:
                super().on_message_complete()
                return
            self._fast = None
            self._dispatch(pending)

        # -- predicting --------------------------------------------------------------------

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            self._running = cycle
            super()._start_asgi_task(cycle, app)

        def connection_lost(self, exc: Exception | None) -> None:
            running = self._running
            if running is not None and not running.response_complete:
                # uvicorn marks only its newest cycle: an older one (pipelining) waiting for
                # the socket to drain would write to the closed transport
                running.disconnected = True
            pending = self._fast
            if pending is not None:  # the client left before sending the whole body
                self._fast = None
                pending.response_complete = True
                gate.dropped += 1
                metrics.in_flight -= 1
            super().connection_lost(exc)

        def _dispatch(self, pending: _Pending) -> None:
            if max_concurrency and gate.in_flight >= max_concurrency:
                gate.refused += 1
                self._respond(pending, busy, UNMATCHED)
                return
            gate.in_flight += 1
            pending.holding = True
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

        def _respond(self, pending: _Pending, reply: Reply, route: str = ROUTE) -> None:
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
            if pending.holding:
                pending.holding = False
                gate.in_flight -= 1
            gate.answered += 1
            metrics.in_flight -= 1
            metrics.record(route, "POST", status, time.perf_counter() - pending.started)
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

        # -- backpressure ------------------------------------------------------------------

        def pause_writing(self) -> None:
            super().pause_writing()  # and reading stops (_Flow)
            self._stall = time.monotonic()

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stall = 0.0

        # -- deadlines and the connection cap (called by the guard) -------------------------

        def _check(self, now: float) -> None:
            transport = self.transport
            if read_timeout:
                if self.flow.write_paused or (
                    transport.is_closing() and transport.get_write_buffer_size()
                ):
                    if not self._stall:
                        self._stall = now
                    elif now - self._stall > read_timeout:  # it takes nothing we send
                        self._reset()
                        return
                else:
                    self._stall = 0.0
            if transport.is_closing() or self._phase == _DONE:
                return
            if self.flow.read_paused:  # not reading is our doing, not the client's
                self._since = now
                return
            if self._phase == _HEAD:
                if read_timeout and now - self._since > read_timeout:
                    self._head_timed_out()
            elif (read_timeout and now - self._since > read_timeout) or (
                body_time and now - self._began > body_time
            ):
                self._body_timed_out()

        def _head_timed_out(self) -> None:
            if not self._in_head:  # connected, sent nothing
                self.transport.close()
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self._close_with(408, slow_head)
            else:  # an answer is on its way: end the connection after it
                cycle.keep_alive = False
                self._phase = _DONE

        def _body_timed_out(self) -> None:
            pending = self._fast
            if pending is not None:
                self._fast = None
                self._phase = _DONE
                pending.keep_alive = False
                self._respond(pending, Reply.error(408, slow_body), UNMATCHED)
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # the ASGI app waits for the body: it gets a disconnect, the client a 408
                started = getattr(cycle, "response_started", True)
                cycle.disconnected = True
                cycle.message_event.set()
                if not started:
                    self._close_with(408, slow_body)
                    metrics.record(UNMATCHED, cycle.scope.get("method", "POST"), 408, 0.0)
                    return
            self.transport.close()

        def _evictable(self) -> bool:
            """Stalled, idle, or still sending a request: nothing is being worked on."""
            if self.transport.is_closing():
                return False
            if self._stall or self._fast is not None:
                return True
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return not self.pipeline
            return self._phase == _BODY and bool(getattr(cycle, "more_body", False))

        def _evict(self) -> None:
            log.debug("closing a %s connection: at the connection limit", _NAMES[self._phase])
            self._reset()  # connection_lost() follows: the request, if any, is dropped

        def _reset(self) -> None:
            """End the connection now, dropping what it has not sent (a reset, not a close
            that would wait for a client that reads nothing)."""
            transport = self.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()

        def _refuse_connection(self) -> None:
            self._close_with(503, "the server has too many open connections; retry later")

        def _close_with(self, status: int, message: str) -> None:
            """Answer ``status`` outside any request cycle and end the connection."""
            transport = self.transport
            if transport.is_closing():
                return
            body = Reply.error(status, message).body
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += (name, b": ", value, b"\r\n")
            content += (
                b"content-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\nconnection: close\r\n",
            )
            if status == 503:
                content.append(b"retry-after: %d\r\n" % RETRY_AFTER_S)
            content += (b"\r\n", body)
            transport.write(b"".join(content))
            transport.close()
            self._phase = _DONE
            log.debug("answered %d and closed the connection: %s", status, message)

    guard.protocol = FastProtocol
    return FastProtocol


_NAMES = {_HEAD: "stalled (headers)", _BODY: "stalled (body)", _DONE: "idle"}


class _Guard:
    """The connection deadlines and the connection cap of one process: a periodic sweep over
    the open connections (uvicorn's set of them), no timer per request."""

    def __init__(self, read_timeout: float, body_time: float, cap: int) -> None:
        self.read_timeout = read_timeout
        self.body_time = body_time
        self.cap = cap
        shortest = min(t for t in (read_timeout, body_time, 4.0) if t)
        self.tick = max(0.05, min(1.0, shortest / 4))
        self.protocol: type[Any] | None = None
        self.connections: set[Any] | None = None
        self.scheduled = False

    def arrived(self, conn: Any) -> None:
        """A new connection (already among ``conn.connections``)."""
        connections = conn.connections
        self.connections = connections
        if not self.scheduled and (self.read_timeout or self.body_time):
            self.scheduled = True
            asyncio.get_running_loop().call_later(self.tick, self._sweep)
        if self.cap and len(connections) > self.cap:
            self._make_room(conn, connections)

    def _make_room(self, newcomer: Any, connections: set[Any]) -> None:
        victim = None
        oldest = float("inf")
        protocol = self.protocol
        for conn in connections:
            if conn is newcomer or type(conn) is not protocol or not conn._evictable():
                continue
            if conn._since < oldest:
                victim, oldest = conn, conn._since
        if victim is not None:
            victim._evict()
        else:  # every connection is working on a request: this one waits for another time
            newcomer._refuse_connection()

    def _sweep(self) -> None:
        connections = self.connections
        if not connections:
            self.scheduled = False
            return
        now = time.monotonic()
        protocol = self.protocol
        for conn in list(connections):
            if type(conn) is protocol:
                conn._check(now)
        asyncio.get_running_loop().call_later(self.tick, self._sweep)


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
        pending.deadline = pending.began + self.timeout  # from its headers: its body included
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
