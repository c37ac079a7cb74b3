"""Run a crate in a real server process and talk to it over HTTP, as a client would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http(method: str, url: str, body: object | None = None, timeout: float = 10.0) -> Any:
    """One JSON request; returns the decoded body (raises on a non-2xx status)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@contextlib.contextmanager
def running_server(crate_dir: Path, *, ready_timeout: float = 90.0) -> Iterator[str]:
    """Start ``modelcrate serve CRATE_DIR`` on a free loopback port; yield its base URL.

    The process is stopped with SIGTERM (then SIGKILL) however the block ends.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "modelcrate", "serve", str(crate_dir), "--port", str(port)]
    cmd += ["--host", "127.0.0.1"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{err[-2000:]}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if http("GET", f"{base}/readyz", timeout=2.0) is not None:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {ready_timeout:.0f}s")
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def v2_request(rows: list[dict[str, Any]], signature: dict[str, Any]) -> dict[str, Any]:
    """An Open Inference Protocol V2 request: one tensor per column (BYTES for strings)."""
    inputs = []
    for col in signature["inputs"]:
        values = [r[col["name"]] for r in rows]
        datatype = "BYTES" if col["dtype"] == "string" else "FP32"
        if col["dtype"] in ("float64",):
            datatype = "FP64"
        inputs.append(
            {"name": col["name"], "shape": [len(rows)], "datatype": datatype, "data": values}
        )
    return {"inputs": inputs}
