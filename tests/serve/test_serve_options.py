"""``modelcrate serve`` batching options on a real server process: the crate's settings by
default, the command line's when given (``--max-batch-size 1``: every request alone)."""

from __future__ import annotations

import concurrent.futures
import re
from pathlib import Path

import httpx
import pytest

from tests.serve.crates import Built, records
from tests.serve.process import serving, wait_ready

pytestmark = pytest.mark.slow


def _serve_and_load(crate: Path, body: list[dict[str, object]], log: Path, *options: str) -> str:
    """Start a server, send 64 concurrent one-row requests, return its /metrics text."""
    with serving(crate, log, *options) as (url, proc):
        wait_ready(proc, url, log)

        def one(i: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as client:
                return client.post("/predict", json=body[i % len(body)]).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            assert set(pool.map(one, range(64))) == {200}
        return httpx.get(url + "/metrics", timeout=10).text


def _histogram(metrics: str, name: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics, re.MULTILINE)
    }


def test_batching_follows_the_crate_then_the_command_line(iris: Built, tmp_path: Path) -> None:
    body = records(iris, slice(0, 150))
    off = _serve_and_load(iris.crate_dir, body, tmp_path / "off.log", "--max-batch-size", "1")
    assert "batching   off" in (tmp_path / "off.log").read_text()
    calls = _histogram(off, "modelcrate_batch_size_requests")
    assert calls["1.0"] == calls["+Inf"] == 64  # every request its own model call

    small = _serve_and_load(iris.crate_dir, body, tmp_path / "small.log", "--max-batch-size", "2")
    assert "batching   up to 2 rows, 2 ms" in (tmp_path / "small.log").read_text()
    rows = _histogram(small, "modelcrate_batch_size_rows")
    assert rows["2.0"] == rows["+Inf"]  # no model call above 2 rows

    default = tmp_path / "default.log"
    _serve_and_load(iris.crate_dir, body, default)
    assert "batching   up to 64 rows, 2 ms" in default.read_text()  # the crate's manifest
