"""Adaptive batching: every caller gets exactly its own rows, batches really form, an idle
model never makes a request wait, a busy one flushes on size or deadline, and one bad request
fails alone."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from modelcrate.serve.batching import Batcher
from modelcrate.serve.fast import ServingApp
from tests.serve.conftest import make_app
from tests.serve.crates import IRIS_CLASSES, IRIS_FEATURES, Built, onnx_session

Arrays = Mapping[str, np.ndarray]


class BadInput(Exception):
    pass


def echo(inputs: Arrays) -> dict[str, np.ndarray]:
    """Outputs that identify each row: its id, and a value computed from it."""
    x = inputs["x"]
    if (x[:, 1] < 0).any():
        raise BadInput("negative")
    return {"id": x[:, 0].copy(), "double": x[:, 0] * 2}


def rows_for(request: int, n: int) -> np.ndarray:
    ids = request * 1000 + np.arange(n, dtype=np.float64)
    return np.column_stack([ids, np.ones(n)])


def test_concurrent_requests_get_exactly_their_rows() -> None:
    sizes: list[tuple[int, int]] = []
    batcher = Batcher(
        echo, max_batch_size=64, max_latency_s=0.001, observe=lambda r, q: sizes.append((r, q))
    )
    rng = random.Random(0)
    counts = [rng.choice([1, 1, 2, 5, 17, 63, 64, 65, 300]) for _ in range(400)]

    async def client(i: int) -> None:
        await asyncio.sleep(rng.random() * 0.01)
        out = await batcher.submit({"x": rows_for(i, counts[i])}, counts[i])
        expected = rows_for(i, counts[i])[:, 0]
        np.testing.assert_array_equal(out["id"], expected)
        np.testing.assert_array_equal(out["double"], expected * 2)

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(len(counts))))

    asyncio.run(main())
    assert sum(r for r, _ in sizes) == sum(counts)  # every row predicted exactly once
    assert sum(q for _, q in sizes) == len(counts)
    assert max(q for _, q in sizes) > 1  # requests really shared model calls
    # whole requests only: a batch of several requests stays within max_batch_size
    assert all(r <= 64 for r, q in sizes if q > 1)
    assert (300, 1) in sizes  # a large request runs alone, never split


def test_an_idle_model_never_makes_a_request_wait() -> None:
    batcher = Batcher(echo, max_batch_size=1000, max_latency_s=60.0)

    async def main() -> Arrays:
        return await asyncio.wait_for(batcher.submit({"x": rows_for(1, 3)}, 3), timeout=5)

    out = asyncio.run(main())  # waiting for the 60 s deadline would time out
    np.testing.assert_array_equal(out["id"], rows_for(1, 3)[:, 0])


class SlowModel:
    """Runs in worker threads (inline_rows=0) and records when each call starts and ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, inputs: Arrays) -> dict[str, np.ndarray]:
        rows = len(inputs["x"])
        with self.lock:
            self.events.append(("start", rows))
        time.sleep(self.seconds)
        with self.lock:
            self.events.append(("end", rows))
        return echo(inputs)


def test_a_busy_model_flushes_at_the_deadline() -> None:
    model = SlowModel(0.5)
    batcher = Batcher(model, max_batch_size=100, max_latency_s=0.02, inline_rows=0, max_parallel=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit({"x": rows_for(1, 1)}, 1))
        await asyncio.sleep(0.05)  # the first call is running
        second = batcher.submit({"x": rows_for(2, 2)}, 2)
        out = await asyncio.gather(first, second)
        np.testing.assert_array_equal(out[1]["id"], rows_for(2, 2)[:, 0])

    asyncio.run(main())
    # the second batch started at its deadline, while the first still ran
    assert model.events[:3] == [("start", 1), ("start", 2), ("end", 1)]


def test_a_busy_model_flushes_a_full_batch_and_waits_otherwise() -> None:
    model = SlowModel(0.3)
    batcher = Batcher(model, max_batch_size=4, max_latency_s=60.0, inline_rows=0, max_parallel=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit({"x": rows_for(1, 1)}, 1))
        await asyncio.sleep(0.05)
        # 2 + 2 rows fill a batch: it runs at once, beside the first call
        full = [asyncio.ensure_future(batcher.submit({"x": rows_for(i, 2)}, 2)) for i in (2, 3)]
        await asyncio.sleep(0.05)
        # 1 row: not full, the deadline is far: it waits for the model to be idle
        late = asyncio.ensure_future(batcher.submit({"x": rows_for(4, 1)}, 1))
        await asyncio.gather(first, *full, late)

    asyncio.run(main())
    assert model.events[:2] == [("start", 1), ("start", 4)]
    assert model.events.index(("start", 1), 1) > model.events.index(("end", 1))


def test_a_bad_request_fails_alone() -> None:
    batcher = Batcher(echo, max_batch_size=64, is_client_error=lambda e: isinstance(e, BadInput))

    async def main() -> list[Any]:
        bad = rows_for(2, 2)
        bad[1, 1] = -1
        inputs = [rows_for(1, 3), bad, rows_for(3, 1)]
        return await asyncio.gather(
            *(batcher.submit({"x": x}, len(x)) for x in inputs), return_exceptions=True
        )

    good1, bad, good3 = asyncio.run(main())
    assert isinstance(bad, BadInput)
    np.testing.assert_array_equal(good1["id"], rows_for(1, 3)[:, 0])
    np.testing.assert_array_equal(good3["id"], rows_for(3, 1)[:, 0])


def test_cancelled_requests_leave_the_queue() -> None:
    calls: list[int] = []

    def run(inputs: Arrays) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return echo(inputs)

    batcher = Batcher(run, max_batch_size=64)

    async def main() -> Arrays:
        doomed = asyncio.ensure_future(batcher.submit({"x": rows_for(1, 5)}, 5))
        kept = asyncio.ensure_future(batcher.submit({"x": rows_for(2, 2)}, 2))
        await asyncio.sleep(0)  # both queued, the flush not run yet
        doomed.cancel()
        return await kept

    out = asyncio.run(main())
    np.testing.assert_array_equal(out["id"], rows_for(2, 2)[:, 0])
    assert calls == [2]


def test_inputs_that_do_not_stack_go_to_separate_batches() -> None:
    calls: list[int] = []

    def run(inputs: Arrays) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"width": np.full(len(inputs["x"]), inputs["x"].shape[1])}

    batcher = Batcher(run, max_batch_size=64)

    async def main() -> list[Arrays]:
        return await asyncio.gather(
            batcher.submit({"x": np.zeros((2, 3))}, 2),
            batcher.submit({"x": np.zeros((1, 4))}, 1),
            batcher.submit({"x": np.zeros((3, 3))}, 3),
        )

    a, b, c = asyncio.run(main())
    assert list(a["width"]) == [3, 3]
    assert list(b["width"]) == [4]
    assert list(c["width"]) == [3] * 3
    assert sorted(calls) == [1, 5]


# -- through the server: many concurrent clients, distinct rows, both protocols --------------


def _random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(n, 4)).astype(np.float32)


async def _clients(app: ServingApp, iris: Built) -> dict[str, int]:
    session = onnx_session(iris)
    rng = np.random.default_rng(7)
    transport = httpx.ASGITransport(app=app)
    counts = {"predict": 0, "v2": 0}

    async def one_client(client: httpx.AsyncClient, k: int) -> None:
        for j in range(8):
            n = int(rng.choice([1, 1, 3, 40]))
            x = _random_rows(rng, n)
            expected = session.run(None, {session.get_inputs()[0].name: x})
            labels = [str(v) for v in expected[0]]
            probs = np.asarray(expected[1])
            if (k + j) % 2:
                body = [dict(zip(IRIS_FEATURES, map(float, r), strict=True)) for r in x]
                r = await client.post("/predict", content=orjson.dumps(body))
                assert r.status_code == 200, r.text
                got = r.json()
                assert [p["label"] for p in got] == labels
                got_probs = np.array([[p["probabilities"][c] for c in IRIS_CLASSES] for p in got])
                counts["predict"] += 1
            else:
                doc = {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [n, 4],
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
                r = await client.post("/v2/models/iris/infer", content=orjson.dumps(doc))
                assert r.status_code == 200, r.text
                outputs = {o["name"]: o for o in r.json()["outputs"]}
                assert outputs["label"]["data"] == labels
                got_probs = np.array(outputs["probabilities"]["data"]).reshape(n, -1)
                counts["v2"] += 1
            np.testing.assert_allclose(got_probs, probs, rtol=1e-5, atol=1e-6)

    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        await asyncio.gather(*(one_client(client, k) for k in range(48)))
        metrics = (await client.get("/metrics")).text
    counts["multi_request_batches"] = _batches_with_several_requests(metrics)
    return counts


def _batches_with_several_requests(metrics: str) -> int:
    """Model calls that served more than one request (from the batch-size histogram)."""
    total = one = 0.0
    for line in metrics.splitlines():
        if line.startswith("modelcrate_batch_size_requests_count"):
            total = float(line.split()[-1])
        if line.startswith('modelcrate_batch_size_requests_bucket{le="1.0"}'):
            one = float(line.split()[-1])
    return int(total - one)


def test_many_concurrent_clients_each_get_their_own_predictions(iris: Built) -> None:
    app = make_app(iris)
    tensor = app.serving.info.signature.tensor_name
    assert tensor == "input"
    counts = asyncio.run(_clients(app, iris))
    assert counts["predict"] + counts["v2"] == 48 * 8
    assert counts["multi_request_batches"] > 0


@pytest.mark.parametrize("size", [1])
def test_batching_can_be_turned_off(iris: Built, size: int) -> None:
    import dataclasses

    from modelcrate.serve import build_app, open_predictor, read_model_info

    info = dataclasses.replace(read_model_info(iris.crate_dir), max_batch_size=size)
    app = build_app(info, lambda: open_predictor(info))
    counts = asyncio.run(_clients(app, iris))
    assert counts["multi_request_batches"] == 0
    assert app.serving.batcher is None
