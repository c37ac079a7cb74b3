"""Pre-fork workers (modelcrate.serve.prefork) in a real process tree.

The server is a ``python -c`` process that loads a real ONNX model with ONNX Runtime in the
parent (fork-safe options: no thread pool), then forks two workers with ``serve_prefork``. Its
app is a raw ASGI callable that runs the parent's session: the answers carry the worker's pid,
so the tests see which process answered.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

GRACEFUL_S = 5.0
SLOW_S = 1.0  # how long /slow holds its request, between its first and its last byte
W = np.arange(12, dtype=np.float32).reshape(4, 3)  # the model: y = x @ W

SERVER = """
import asyncio, json, logging, os, sys, time
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from modelcrate.runtime.onnx_runtime import configure_threads
from modelcrate.serve.prefork import serve_prefork

logging.basicConfig(level=logging.INFO, format="%(process)d %(message)s")
port, mode = int(sys.argv[1]), sys.argv[2]
slow_s, graceful_s = float(sys.argv[3]), float(sys.argv[4])
w = np.arange(12, dtype=np.float32).reshape(4, 3)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    [numpy_helper.from_array(w, "W")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
options = ort.SessionOptions()
configure_threads(options, 1)
session = ort.InferenceSession(
    model.SerializeToString(), options, providers=["CPUExecutionProvider"]
)

async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    y = session.run(None, {"x": np.asarray(json.loads(body), dtype=np.float32)})[0]
    answer = json.dumps({"pid": os.getpid(), "y": y.tolist()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    if scope["path"] == "/slow":  # the headers now, the answer later
        await send({"type": "http.response.body", "body": b" ", "more_body": True})
        await asyncio.sleep(slow_s)
    await send({"type": "http.response.body", "body": answer})

def factory():
    if mode == "crash":
        raise RuntimeError("this app cannot start")
    if mode == "slow-start":
        time.sleep(1.0)
    return app

sys.exit(serve_prefork(factory, workers=2, host="127.0.0.1", port=port,
                       uvicorn_kwargs={"log_level": "warning", "lifespan": "off"},
                       graceful_timeout_s=graceful_s))
"""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path, mode: str = "serve") -> Server:
    port = _free_port()
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), mode, str(SLOW_S), str(GRACEFUL_S)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, port, log)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.kill()  # the workers follow (PR_SET_PDEATHSIG)
        server.proc.wait()


def _request(port: int, rows: list[list[float]], path: str = "/predict") -> dict[str, Any]:
    """One POST on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(rows))
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer
    finally:
        conn.close()


def _check(answer: dict[str, Any], rows: list[list[float]]) -> int:
    np.testing.assert_allclose(answer["y"], np.asarray(rows, dtype=np.float32) @ W, rtol=1e-6)
    return int(answer["pid"])


def _pids_answering(port: int, want: int, *, exclude: set[int] | None = None) -> set[int]:
    """Distinct pids (not in ``exclude``) seen over fresh connections, until ``want`` of them."""
    seen: set[int] = set()
    tries = 400
    for i in range(tries):
        rows = [[float(i), 1.0, 2.0, 3.0], [0.5, float(-i), 0.0, 1.0]]
        pid = _check(_request(port, rows), rows)
        if pid not in (exclude or set()):
            seen.add(pid)
        if len(seen) >= want:
            return seen
    raise AssertionError(f"only {seen} answered in {tries} requests")


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.proc.poll() is None, server.text()
        try:
            _request(server.port, [[1.0, 2.0, 3.0, 4.0]])
            return
        except (ConnectionError, http.client.HTTPException, TimeoutError):
            pass
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.05)


def _children(pid: int) -> set[int]:
    """The live children of ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def _gone(pid: int) -> bool:
    """Exited and reaped (no zombie left)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start(tmp_path_factory.mktemp("prefork"))
    try:
        _wait_ready(started)
        yield started
    finally:
        _stop(started)


def test_both_workers_answer_correctly(server: Server) -> None:
    children = _children(server.proc.pid)
    assert len(children) == 2, server.text()
    assert _pids_answering(server.port, 2) == children


def test_a_killed_worker_is_replaced(server: Server) -> None:
    before = _children(server.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(victim) or len(_children(server.proc.pid)) < 2:
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.02)
    after = _children(server.proc.pid)
    (new,) = after - before
    assert after == (before - {victim}) | {new}
    assert _pids_answering(server.port, 1, exclude=before) == {new}  # the new one serves
    assert _pids_answering(server.port, 2) == after  # and so does the other one
    assert f"worker {victim} exited unexpectedly (SIGKILL)" in server.text()


def test_sigterm_under_load_answers_every_accepted_request(tmp_path: Path) -> None:
    server = _start(tmp_path)
    stop = threading.Event()
    answered: list[int] = []
    errors: list[tuple[float, str]] = []

    def fast_client() -> None:  # fresh connections, as fast as it can, until one fails
        i = 0
        while not stop.is_set():
            rows = [[float(i), 0.0, 1.0, -1.0]]
            try:
                answer = _request(server.port, rows)
            except (OSError, http.client.HTTPException) as exc:
                errors.append((time.monotonic(), type(exc).__name__))
                return
            _check(answer, rows)
            answered.append(i)
            i += 1

    fast = [threading.Thread(target=fast_client) for _ in range(4)]
    slow: list[tuple[http.client.HTTPConnection, http.client.HTTPResponse, int]] = []
    try:
        _wait_ready(server)
        workers = _children(server.proc.pid)
        for t in fast:
            t.start()
        for i in range(6):  # requests the workers hold: their headers came, not their answers
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("POST", "/slow", body=json.dumps([[float(i), 1.0, 1.0, 1.0]]))
            slow.append((conn, conn.getresponse(), i))
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while True:  # soon refusing new connections ...
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=3).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() - sigterm_at < SLOW_S / 2, server.text()
            time.sleep(0.01)
        assert server.proc.poll() is None  # ... while still answering the slow requests
        pids = {
            _check(json.loads(response.read()), [[i, 1.0, 1.0, 1.0]]) for _, response, i in slow
        }
        code = server.proc.wait(timeout=GRACEFUL_S + 5)
        exit_s = time.monotonic() - sigterm_at
    finally:
        stop.set()
        for t in fast:
            if t.is_alive():
                t.join(timeout=10)
        for conn, _, _ in slow:
            conn.close()
        _stop(server)
    text = server.text()
    assert code == 0, text
    assert exit_s < GRACEFUL_S, (exit_s, text)
    assert pids <= workers
    assert len(answered) > 10, (answered, errors)
    assert all(when > sigterm_at for when, _ in errors), errors  # failed only once stopping
    assert all(_gone(pid) for pid in workers), text
    for pid in workers:
        assert f"worker {pid} exited (code 0)" in text


def test_workers_failing_in_a_loop_stop_the_server(tmp_path: Path) -> None:
    server = _start(tmp_path, "crash")
    try:
        code = server.proc.wait(timeout=20)
    finally:
        _stop(server)
    text = server.text()
    assert code == 1, text
    assert "this app cannot start" in text
    assert "workers exited within 10 s: stopping the server" in text
    assert not _children(server.proc.pid)


def test_sigterm_while_workers_start(tmp_path: Path) -> None:
    server = _start(tmp_path, "slow-start")
    try:
        deadline = time.monotonic() + 10
        while len(workers := _children(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, server.text()
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)  # before their apps exist
        code = server.proc.wait(timeout=GRACEFUL_S)
    finally:
        _stop(server)
    text = server.text()
    assert code == 0, text
    for pid in workers:
        assert f"worker {pid} exited (code 0)" in text
