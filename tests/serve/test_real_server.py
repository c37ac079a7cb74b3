"""One real server process (``modelcrate serve`` under uvicorn, on a free port) answering the
real V2 clients: ``tritonclient[http]`` in JSON mode and the ``kserve`` SDK's REST client."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.crates import IRIS_CLASSES, Built, onnx_session, records
from tests.serve.process import serving, wait_ready

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Server:
    url: str
    host_port: str  # "127.0.0.1:PORT", as tritonclient wants it
    version: str
    log: Path


@pytest.fixture(scope="module")
def server(iris: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving(iris.crate_dir, log) as (url, proc):
        ready = wait_ready(proc, url, log)
        yield Server(url, url.removeprefix("http://"), ready.json()["version"], log)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()


def _expected(iris: Built, x: np.ndarray) -> tuple[list[str], np.ndarray]:
    """What ONNX Runtime answers for ``x`` directly (labels, probabilities)."""
    label, probs = onnx_session(iris).run(None, {"input": x})
    return [str(v) for v in label], probs


def test_tritonclient_json_metadata_and_health(server: Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.host_port)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        assert client.is_model_ready("iris", model_version=server.version)
        assert client.get_server_metadata()["name"] == "modelcrate"
        meta = client.get_model_metadata("iris")
        assert meta["name"] == "iris"
        assert meta["versions"] == [server.version]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    finally:
        client.close()


def test_tritonclient_json_infer_equals_the_model(server: Server, iris: Built) -> None:
    import tritonclient.http as httpclient

    x = iris.frame.to_numpy()[::5]  # 30 rows, float32
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ]
    client = httpclient.InferenceServerClient(url=server.host_port)
    try:
        result = client.infer("iris", [tensor], outputs=outputs, model_version=server.version)
    finally:
        client.close()
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label")]
    probs = result.as_numpy("probabilities")
    onnx_labels, onnx_probs = _expected(iris, x)
    assert labels == onnx_labels
    assert probs.dtype == np.float32
    np.testing.assert_array_equal(probs, onnx_probs)  # FP32 JSON round-trips exactly
    assert labels == list(iris.model.predict(x))
    np.testing.assert_allclose(probs, iris.model.predict_proba(x), atol=1e-5)
    assert result.get_response()["model_version"] == server.version


def test_tritonclient_errors_carry_status_and_message(server: Server) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=server.host_port)
    try:
        tensor = httpclient.InferInput("input", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
        with pytest.raises(InferenceServerException) as wrong_shape:
            client.infer("iris", [tensor])
        assert wrong_shape.value.status() == "400"
        assert "[rows, 4]" in wrong_shape.value.message()
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("nope")
        assert unknown.value.status() == "404"
    finally:
        client.close()


def test_kserve_rest_client_v2_infer_equals_the_model(server: Server, iris: Built) -> None:
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    x = iris.frame.to_numpy()[1::7]

    async def run() -> tuple[bool, bool, bool, object]:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            live = await client.is_server_live(server.url)
            ready = await client.is_server_ready(server.url)
            model_ready = await client.is_model_ready(server.url, "iris")
            tensor = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            tensor.set_data_from_numpy(x, binary_data=False)
            request = InferRequest(model_name="iris", infer_inputs=[tensor], request_id="k-1")
            response = await client.infer(server.url, request, model_name="iris")
            return live, ready, model_ready, response
        finally:
            await client.close()

    live, ready, model_ready, response = asyncio.run(run())
    assert (live, ready, model_ready) == (True, True, True)
    outputs = {o.name: o.as_numpy() for o in response.outputs}  # type: ignore[attr-defined]
    assert response.id == "k-1"  # type: ignore[attr-defined]
    onnx_labels, onnx_probs = _expected(iris, x)
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["label"]]
    assert labels == onnx_labels == list(iris.model.predict(x))
    np.testing.assert_array_equal(outputs["probabilities"], onnx_probs)


def test_typed_predict_and_metrics_over_http(server: Server, iris: Built) -> None:
    recs = records(iris, slice(100, 104))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        body = client.post("/predict", json=recs).json()
        assert [p["label"] for p in body] == list(
            iris.model.predict(iris.frame.to_numpy()[100:104])
        )
        assert list(body[0]["probabilities"]) == list(IRIS_CLASSES)
        assert client.post("/predict", json={"bad": 1}).status_code == 422
        assert client.get("/docs").status_code == 200
        metrics = client.get("/metrics").text
    assert 'modelcrate_requests_total{method="POST",route="/predict",status="200"}' in metrics
    assert 'route="/v2/models/{name}/infer",status="200"' in metrics
    assert "modelcrate_request_duration_seconds_bucket" in metrics


def test_tritonclient_binary_default_mode_equals_the_model(server: Server, iris: Built) -> None:
    """tritonclient's defaults: binary inputs and binary outputs, over a real socket."""
    import tritonclient.http as httpclient

    x = iris.frame.to_numpy()  # 150 rows: larger than the inline limit, predicted in a thread
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=True),
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
    ]
    client = httpclient.InferenceServerClient(url=server.host_port)
    try:
        result = client.infer("iris", [tensor], outputs=outputs, request_id="bin-1")
        implicit = client.infer("iris", [tensor])  # no outputs named: binary_data_output
    finally:
        client.close()
    onnx_labels, onnx_probs = _expected(iris, x)
    for res in (result, implicit):
        assert [v.decode() for v in res.as_numpy("label")] == onnx_labels
        probs = res.as_numpy("probabilities")
        assert probs.dtype == np.float32
        np.testing.assert_array_equal(probs, onnx_probs)
    response = result.get_response()
    assert response["id"] == "bin-1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])


def test_kserve_rest_client_v2_binary_infer(server: Server, iris: Built) -> None:
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    x = iris.frame.to_numpy()[2::11]

    async def run() -> object:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            tensor = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            request = InferRequest(
                model_name="iris",
                infer_inputs=[tensor],
                request_id="kb-1",
                parameters={"binary_data_output": True},
            )
            return await client.infer(server.url, request, model_name="iris")
        finally:
            await client.close()

    response = asyncio.run(run())
    outputs = {o.name: o.as_numpy() for o in response.outputs}  # type: ignore[attr-defined]
    onnx_labels, onnx_probs = _expected(iris, x)
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["label"]]
    assert labels == onnx_labels
    np.testing.assert_array_equal(outputs["probabilities"], onnx_probs)


def test_kserve_rest_client_v1_predict(server: Server, iris: Built) -> None:
    from kserve import InferenceRESTClient, RESTConfig

    x = iris.frame.to_numpy()[3::13]
    recs = records(iris, slice(3, 150, 13))

    async def run() -> tuple[bool, object, object]:
        client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
        try:
            live = await client.is_server_live(server.url)
            ready = live and await client.is_model_ready(server.url, "iris")
            by_list = await client.infer(server.url, {"instances": x.tolist()}, model_name="iris")
            by_record = await client.infer(server.url, {"instances": recs}, model_name="iris")
            return ready, by_list, by_record
        finally:
            await client.close()

    ready, by_list, by_record = asyncio.run(run())
    assert ready is True
    assert by_list == by_record
    assert isinstance(by_list, dict)
    onnx_labels, onnx_probs = _expected(iris, x)
    predictions = by_list["predictions"]
    assert [p["label"] for p in predictions] == onnx_labels
    got = np.array([[p["probabilities"][c] for c in IRIS_CLASSES] for p in predictions])
    np.testing.assert_allclose(got, onnx_probs, atol=1e-6)
