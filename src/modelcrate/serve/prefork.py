"""Pre-fork workers: one listening socket, ``workers`` forked uvicorn servers, one supervisor.

The caller loads the model in the parent, then calls :func:`serve_prefork`. The children are
``os.fork()`` copies of the parent, so the pages that hold the loaded weights are shared
copy-on-write: N workers cost one copy of the weights plus each worker's own heap (ONNX Runtime
never writes to its initializers; ``gc.freeze()`` keeps the collector from touching the parent's
objects). ``benchmarks/serving/workers.py`` measures it (RSS, PSS and USS per process).

Fork safety: the parent must not run an event loop or threads of its own when it forks (only
the thread that forks exists in a child). An ONNX Runtime session made with its default
intra-op thread pool loses the pool's threads in each child: ORT 1.32 then runs the work on the
calling thread (no hang seen in 1,100 forked children, but no parallelism either, and a pool
thread holding a lock at the fork would deadlock the child). Make the session with
one intra-op thread (``runtime.onnx_runtime.configure_threads(options, 1)``: no pool, no
spinning), as ``modelcrate serve --workers N`` does.

The parent supervises: SIGTERM or SIGINT -> SIGTERM to every worker (uvicorn's graceful
shutdown), SIGKILL to those still running ``graceful_timeout_s`` + 5 s later; a worker that
exits on its own is replaced, unless workers exit in a loop (more than 5 in 10 s), which stops
the server with exit code 1. Linux (and other POSIX systems with ``os.fork``) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["serve_prefork"]

log = logging.getLogger("modelcrate.serve")

BACKLOG = 2048
KILL_MARGIN_S = 5.0  # after the graceful bound, before SIGKILL
CRASH_LIMIT = 5  # more unexpected worker exits than this ...
CRASH_WINDOW_S = 10.0  # ... within this many seconds stop the server
STARTUP_FAILURE = 3  # a worker's exit code when its app did not start (uvicorn's own)
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_Mask = set[int | signal.Signals]  # a signal mask, as pthread_sigmask returns it


def serve_prefork(
    app_factory: Callable[[], ASGIApp],
    *,
    workers: int,
    host: str,
    port: int,
    uvicorn_kwargs: dict[str, Any],
    graceful_timeout_s: float,
) -> int:
    """Serve ``app_factory()`` (called once in each worker, after the fork) from ``workers``
    forked processes sharing one socket bound to ``host:port`` now. Returns the exit code: 0 after
    a graceful shutdown, 1 if a worker had to be killed or workers kept exiting."""
    if not hasattr(os, "fork"):
        raise RuntimeError("several workers need os.fork (Linux); serve with one worker here")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("serve_prefork cannot fork from a running event loop")
    if threading.active_count() > 1:
        log.warning("forking with %d Python threads running", threading.active_count())
    config = {"timeout_graceful_shutdown": graceful_timeout_s, **uvicorn_kwargs}
    config.update(host=host, port=port)
    if isinstance(config.get("log_config"), dict):  # as uvicorn does in its main process
        logging.config.dictConfig(config["log_config"])
    import uvicorn  # noqa: F401  (imported once, in the parent: the workers share it)

    sock = _bind(host, port)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # taken by sigwaitinfo
    gc.freeze()  # the parent's objects stay out of the children's collections: pages stay shared
    try:
        log.info("listening on %s:%d, %d worker(s)", host, sock.getsockname()[1], workers)
        supervisor = _Supervisor(lambda: _fork(app_factory, sock, config, mask), sock.close)
        return supervisor.run(workers, graceful_timeout_s)
    finally:
        while signal.sigtimedwait(_SIGNALS, 0) is not None:  # nothing pending once unblocked
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        sock.close()
        gc.unfreeze()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _fork(
    app_factory: Callable[[], ASGIApp], sock: socket.socket, config: dict[str, Any], mask: _Mask
) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _worker(app_factory, sock, config, mask, parent)
    log.info("worker %d started", pid)
    return pid


def _worker(
    app_factory: Callable[[], ASGIApp],
    sock: socket.socket,
    config: dict[str, Any],
    mask: _Mask,
    parent: int,
) -> NoReturn:
    code = 1
    try:
        # SIGTERM and SIGINT stay blocked (as in the parent) until a handler that stops this
        # worker's server is in place: a SIGTERM during the start-up is not lost.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before that
            os._exit(1)
        import uvicorn

        app = app_factory()
        protocol = getattr(app, "http_protocol", None)  # modelcrate's HTTP fast path
        if protocol is not None:
            config = {**config, "http": protocol}
        server = uvicorn.Server(uvicorn.Config(app, **config))

        def stop(_sig: int, _frame: object) -> None:
            server.should_exit = True  # uvicorn then starts, stops at once, and exits 0

        # uvicorn installs its own handlers while it runs, then restores these and raises the
        # signals it caught again: they land here, and the worker exits 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        server.run(sockets=[sock])
        code = 0 if server.started else STARTUP_FAILURE
    except SystemExit as exc:  # uvicorn's, once it has logged why
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", os.getpid())
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """SIGTERM this worker when the parent dies (even of SIGKILL): no orphaned workers."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor still stops them
        pass


class _Supervisor:
    def __init__(self, spawn: Callable[[], int], stop_listening: Callable[[], None]) -> None:
        self._spawn = spawn
        self._stop_listening = stop_listening
        self._children: set[int] = set()

    def run(self, workers: int, graceful_timeout_s: float) -> int:
        exits: deque[float] = deque()
        try:
            for _ in range(workers):
                self._children.add(self._spawn())
            while True:
                info = signal.sigwaitinfo(_SIGNALS)
                if info.si_signo != signal.SIGCHLD:
                    name = _name(info.si_signo)
                    log.info("%s: stopping %d worker(s)", name, len(self._children))
                    return self._stop(graceful_timeout_s)
                for pid, status in self._reap():
                    log.warning("worker %d exited unexpectedly (%s)", pid, _describe(status))
                    now = time.monotonic()
                    exits.append(now)
                    while now - exits[0] > CRASH_WINDOW_S:
                        exits.popleft()
                    if len(exits) > CRASH_LIMIT:
                        log.error(
                            "%d workers exited within %.0f s: stopping the server (see the "
                            "workers' errors above)", len(exits), CRASH_WINDOW_S,
                        )  # fmt: skip
                        self._stop(graceful_timeout_s)
                        return 1
                    self._children.add(self._spawn())
        except BaseException:
            self._kill_all()
            raise

    def _reap(self) -> Iterator[tuple[int, int]]:
        for pid in list(self._children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self._children.discard(pid)
                yield pid, status

    def _stop(self, graceful_timeout_s: float) -> int:
        # The parent's copy of the socket closes now: once the workers close theirs (uvicorn's
        # shutdown), a connection the kernel queued but no worker accepted is refused at once.
        self._stop_listening()
        clean = True
        for pid in self._children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + graceful_timeout_s + KILL_MARGIN_S
        while True:
            for pid, status in self._reap():
                log.info("worker %d exited (%s)", pid, _describe(status))
                clean = clean and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            left = deadline - time.monotonic()
            if not self._children or left <= 0:
                break
            signal.sigtimedwait(_SIGNALS, min(left, 1.0))  # a repeated SIGTERM changes nothing
        if self._children:
            log.error(
                "worker(s) %s still running %.0f s after SIGTERM: killed",
                sorted(self._children), graceful_timeout_s + KILL_MARGIN_S,
            )  # fmt: skip
            self._kill_all()
            clean = False
        return 0 if clean else 1

    def _kill_all(self) -> None:
        for pid in self._children:
            _signal(pid, signal.SIGKILL)
        for pid in self._children:
            os.waitpid(pid, 0)
        self._children.clear()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return _name(os.WTERMSIG(status))
    return f"code {os.waitstatus_to_exitcode(status)}"


def _name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"
