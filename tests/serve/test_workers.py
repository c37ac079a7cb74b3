"""``modelcrate serve --workers 2``: one supervisor, two forked workers sharing the socket and
the loaded model; a killed worker is replaced; SIGTERM stops everything cleanly."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.crates import Built, onnx_session, records
from tests.serve.process import serving, wait_ready

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _wait(predicate: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)


def test_two_forked_workers_serve_survive_a_crash_and_stop_on_sigterm(
    iris: Built, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with serving(iris.crate_dir, log, "--workers", "2", log_level="info") as (url, proc):
        wait_ready(proc, url, log)
        _wait(lambda: len(_children(proc.pid)) == 2, 30, "two workers", log)
        workers = _children(proc.pid)

        x = iris.frame.to_numpy()[:12]
        labels = [str(v) for v in onnx_session(iris).run(None, {"input": x})[0]]
        body = records(iris, slice(0, 12))
        for _ in range(10):  # fresh connections: the kernel spreads them over the workers
            got = httpx.post(url + "/predict", json=body, timeout=10).json()
            assert [p["label"] for p in got] == labels

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_children(proc.pid) - {victim}) == 2, 30, "a replacement worker", log)
        replacement = _children(proc.pid) - workers
        assert len(replacement) == 1
        wait_ready(proc, url, log, timeout=30)
        for _ in range(10):
            one = httpx.post(url + "/predict", json=body[0], timeout=10).json()
            assert one["label"] == labels[0]
        assert np.isclose(sum(one["probabilities"].values()), 1.0, atol=1e-5)

        everyone = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, log.read_text()
        assert not [pid for pid in everyone if _alive(pid)]
        text = log.read_text()
        assert f"worker {victim} exited" in text, text
