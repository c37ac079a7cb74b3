"""Real ``modelcrate serve`` processes for tests: a free port, start, wait until ready, stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60
) -> httpx.Response:
    """Poll ``/readyz`` until it answers 200 (that answer); fail with the log if the server
    exits or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            ready = httpx.get(url + "/readyz", timeout=1)
            if ready.status_code == 200:
                return ready
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready within {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.05)


@contextmanager
def serving(
    crate_dir: Path, log: Path, *options: str, log_level: str = "warning"
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m modelcrate serve CRATE_DIR`` on a free port, its output in ``log``; yields
    ``(url, process)`` once ready and stops it with SIGTERM (SIGKILL after 15 s) on exit,
    unless the test stopped it already."""
    port = free_port()
    cmd = [sys.executable, "-m", "modelcrate", "serve", str(crate_dir), "--port", str(port)]
    cmd += ["--no-access-log", "--log-level", log_level, *options]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
