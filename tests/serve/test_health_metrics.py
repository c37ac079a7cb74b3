"""Liveness, readiness (earned by a warm-up prediction) and the Prometheus metrics."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from modelcrate.errors import InputError
from modelcrate.serve import build_app, read_model_info
from tests.serve.asgi import AppClient
from tests.serve.conftest import make_app, predictor_for
from tests.serve.crates import Built, records


class Broken:
    """A predictor that fails: always, or only after ``good`` successful calls."""

    def __init__(self, inner: Any, good: int = 0, error: Exception | None = None) -> None:
        self.inner = inner
        self.good = good
        self.error = error or RuntimeError("onnxruntime exploded")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.good <= 0:
            raise self.error
        self.good -= 1
        return dict(self.inner.predict(inputs))


def _metric(text: str, metric: str, /, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(metric):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == metric and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{metric} {labels} not in metrics")


def test_healthz_and_readyz_when_ready(iris_client: AppClient, iris: Built) -> None:
    assert iris_client.get("/healthz").json() == {"status": "ok"}
    ready = iris_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model"] == "iris"


def test_warmup_failure_leaves_the_server_live_but_not_ready(iris: Built) -> None:
    info = read_model_info(iris.crate_dir)
    app = build_app(info, lambda: Broken(predictor_for(iris)))
    with AppClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready"
        assert "onnxruntime exploded" in ready.json()["reason"]
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert "not ready" in client.get("/v2/models/iris/ready").json()["error"]
        response = client.post("/predict", json=records(iris, slice(0, 1))[0])
        assert response.status_code == 503
        x = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
        response = client.post("/v2/models/iris/infer", json={"inputs": [x]})
        assert response.status_code == 503
        assert "not ready" in response.json()["error"]
        assert _metric(client.get("/metrics").text, "modelcrate_model_ready") == 0


def test_load_failure_stops_start_up(iris: Built) -> None:
    def fail() -> Any:
        raise InputError("corrupt model", path="model/model.onnx")

    app = build_app(read_model_info(iris.crate_dir), fail)
    with pytest.raises(InputError, match="corrupt model"), AppClient(app):
        pass


def test_prediction_errors_are_500_and_input_errors_422(iris: Built) -> None:
    info = read_model_info(iris.crate_dir)
    inner = predictor_for(iris)
    app = build_app(info, lambda: Broken(inner, good=1))  # warm-up passes, then it fails
    record = records(iris, slice(0, 1))[0]
    with AppClient(app) as client:
        response = client.post("/predict", json=record)
        assert response.status_code == 500
        assert "onnxruntime exploded" in response.json()["detail"]
        x = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
        response = client.post("/v2/models/iris/infer", json={"inputs": [x]})
        assert response.status_code == 500
        assert "prediction failed" in response.json()["error"]
        text = client.get("/metrics").text
        assert (
            _metric(text, "modelcrate_request_errors_total", route="/predict", kind="server") == 1
        )

    refusing = Broken(inner, good=1, error=InputError("value out of range"))
    with AppClient(build_app(info, lambda: refusing)) as client:
        response = client.post("/predict", json=record)
        assert response.status_code == 422
        assert response.json()["detail"][0]["msg"] == "value out of range"


def test_metrics_count_requests_latency_errors_and_rows(iris: Built) -> None:
    with AppClient(make_app(iris)) as client:
        recs = records(iris, slice(0, 5))
        for _ in range(3):
            assert client.post("/predict", json=recs).status_code == 200
        assert client.post("/predict", json={"nope": 1}).status_code == 422
        assert client.get("/v2/models/other").status_code == 404
        assert client.get("/no/such/path").status_code == 404
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = {"route": "/predict", "method": "POST"}
    assert _metric(text, "modelcrate_requests_total", **ok, status="200") == 3
    assert _metric(text, "modelcrate_requests_total", **ok, status="422") == 1
    assert _metric(text, "modelcrate_requests_total", route="unmatched", status="404") == 1
    v2 = "/v2/models/{name}"
    assert _metric(text, "modelcrate_request_errors_total", route=v2, kind="client") == 1
    assert _metric(text, "modelcrate_request_errors_total", route="/predict", kind="client") == 1
    assert _metric(text, "modelcrate_request_duration_seconds_count", route="/predict") == 4
    assert (
        _metric(text, "modelcrate_request_duration_seconds_bucket", route="/predict", le="+Inf")
        == 4
    )
    assert _metric(text, "modelcrate_request_duration_seconds_sum", route="/predict") > 0
    assert _metric(text, "modelcrate_requests_in_flight") == 1  # the /metrics request itself
    assert _metric(text, "modelcrate_predicted_rows_total") == 15  # the warm-up is not counted
    assert _metric(text, "modelcrate_model_ready") == 1
    info = _metric(text, "modelcrate_model_info", name="iris", runtime="onnxruntime")
    assert info == 1
    assert "process_resident_memory_bytes" in text


def test_two_apps_do_not_share_metrics(iris: Built) -> None:
    with AppClient(make_app(iris)) as one, AppClient(make_app(iris)) as two:
        one.get("/healthz")
        text = two.get("/metrics").text
    with pytest.raises(AssertionError):
        _metric(text, "modelcrate_requests_total", route="/healthz")
