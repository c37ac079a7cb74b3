"""SIGTERM under load: a real ``python -m modelcrate serve CRATE_DIR`` process stops accepting,
finishes every request it accepted, and exits 0 within its graceful bound.

Two kinds of clients run at once: fast ones (threads, keep-alive, one distinct row per request,
as fast as they can) and slow ones (raw sockets that send their headers and half of their body
before the signal and the rest after it: requests the server accepted and must still answer).
The server's own shutdown summary (requests accepted / answered) must equal what the clients
received: no accepted request was lost between the server and its client.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.serve.crates import Built, onnx_session
from tests.serve.process import free_port

pytestmark = pytest.mark.slow

FAST_CLIENTS = 12
SLOW_CLIENTS = 6
GRACEFUL_S = 10.0
SUMMARY = re.compile(r"shutdown: (\d+) request\(s\) accepted, (\d+) answered, (\d+) cut off")


def _row(iris: Built, i: int) -> dict[str, float]:
    """Row ``i``: an iris sample made distinct by a small shift of its first feature."""
    values = iris.frame.iloc[i % len(iris.frame)].to_numpy(dtype=np.float32).copy()
    values[0] += np.float32((i // len(iris.frame)) * 0.01)
    return {name: float(v) for name, v in zip(iris.frame.columns, values, strict=True)}


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    responses: int = 0  # HTTP responses received, of any status
    answers: dict[int, Any] = field(default_factory=dict)  # row -> /predict body
    statuses: list[int] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when, what)

    def got(self, status: int, row: int | None = None, body: Any = None) -> None:
        with self.lock:
            self.responses += 1
            self.statuses.append(status)
            if row is not None:
                self.answers[row] = body


def _fast_client(
    url: str, iris: Built, ids: Any, tally: Tally, *, go: threading.Event, stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            go.wait()
            i = next(ids)
            try:
                response = client.post("/predict", content=orjson.dumps(_row(iris, i)))
            except httpx.TransportError as exc:  # refused or closed once shutting down
                with tally.lock:
                    tally.errors.append((time.monotonic(), type(exc).__name__))
                return
            tally.got(response.status_code, i, response.json())


def _in_flight(url: str, tally: Tally) -> int:
    """Requests the server's app holds now (its Prometheus gauge; this request included)."""
    response = httpx.get(url + "/metrics", timeout=10)
    tally.got(response.status_code)
    match = re.search(r"^modelcrate_requests_in_flight (\S+)$", response.text, re.MULTILINE)
    assert match, response.text
    return int(float(match.group(1)))


def _slow_request(port: int, body: bytes) -> tuple[socket.socket, bytes]:
    """Connect and send the headers and the first half of the body; the rest is sent later."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def _finish_slow(sock: socket.socket, rest: bytes) -> tuple[int, Any]:
    with sock:
        sock.sendall(rest)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {data!r}"
            data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(payload) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of a response"
            payload += chunk
        return int(head.split()[1]), orjson.loads(payload)


def test_sigterm_under_load_loses_no_accepted_request(iris: Built, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "modelcrate", "serve", str(iris.crate_dir), "--port", str(port)]
    cmd += ["--no-access-log", "--log-level", "info", "--graceful-timeout-s", str(GRACEFUL_S)]
    tally = Tally()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited early:\n{log.read_text()}"
            try:
                ready = httpx.get(url + "/readyz", timeout=1)
                tally.got(ready.status_code)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.1)

        ids = itertools.count()
        go, stop = threading.Event(), threading.Event()
        go.set()
        fast = [
            threading.Thread(
                target=_fast_client,
                args=(url, iris, ids, tally),
                kwargs={"go": go, "stop": stop},
                daemon=True,  # a failed assertion must not leave pytest waiting for them
            )
            for _ in range(FAST_CLIENTS)
        ]
        for t in fast:
            t.start()
        while tally.responses < 300:  # under load
            assert all(t.is_alive() for t in fast), tally.errors
            time.sleep(0.01)
        slow_rows = [1_000_000 + k for k in range(SLOW_CLIENTS)]
        go.clear()  # a pause, to see the server take up the slow requests (2 cores: it can lag)
        slow = [_slow_request(port, orjson.dumps(_row(iris, i))) for i in slow_rows]
        while _in_flight(url, tally) < SLOW_CLIENTS + 1:  # + this /metrics request
            assert time.monotonic() < deadline + 60, log.read_text()
            time.sleep(0.02)
        go.set()
        time.sleep(0.1)  # under load again

        before = tally.responses
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Draining: still running (the slow requests are open) but refusing new connections.
        assert proc.poll() is None, log.read_text()
        refused_started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):  # at once, not a hang
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
        assert time.monotonic() - refused_started < 1.0
        with pytest.raises(httpx.TransportError):
            httpx.post(url + "/predict", content=orjson.dumps(_row(iris, 0)), timeout=3)

        for (sock, rest), i in zip(slow, slow_rows, strict=True):  # the accepted ones finish
            status, body = _finish_slow(sock, rest)
            tally.got(status, i, body)
        stop.set()
        for t in fast:
            t.join(timeout=30)
        code = proc.wait(timeout=GRACEFUL_S + 5)
        exit_s = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text
    assert exit_s < GRACEFUL_S, (exit_s, text)

    # Every fast client stopped on a refused / closed connection after the signal, none before.
    assert len(tally.errors) == FAST_CLIENTS
    assert all(when >= sigterm_at for when, _ in tally.errors), tally.errors
    # Every answer is 200 and exactly its own row's prediction.
    assert set(tally.statuses) == {200}, sorted(set(tally.statuses))
    rows = sorted(tally.answers)
    x = np.array([list(_row(iris, i).values()) for i in rows], dtype=np.float32)
    labels, probs = onnx_session(iris).run(None, {"input": x})
    got_labels = [tally.answers[i]["label"] for i in rows]
    assert got_labels == [str(v) for v in labels]
    got_probs = np.array([list(tally.answers[i]["probabilities"].values()) for i in rows])
    np.testing.assert_allclose(got_probs, probs, rtol=0, atol=1e-6)
    assert all(i in tally.answers for i in slow_rows)
    # The server answered exactly what the clients received, and cut nothing off.
    match = SUMMARY.search(text)
    assert match, text
    accepted, answered, cut_off = map(int, match.groups())
    assert (accepted, answered, cut_off) == (tally.responses, tally.responses, 0), text
    print(
        f"\n{tally.responses} responses ({before} before SIGTERM, {SLOW_CLIENTS} slow ones "
        f"open across it); exit {code} {exit_s:.2f} s after SIGTERM"
    )
