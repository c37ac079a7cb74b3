"""Open Inference Protocol V2 over JSON, in process: metadata, health, infer, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from tests.serve.asgi import AppClient
from tests.serve.crates import IRIS_CLASSES, Built, records


def _iris_infer(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": "FP32",
        "data": x.ravel().tolist(),
    }
    return {"inputs": [tensor], **extra}


def _version(client: AppClient) -> str:
    return str(client.get("/").json()["version"])


def test_server_metadata_and_health(iris_client: AppClient) -> None:
    meta = iris_client.get("/v2").json()
    assert meta["name"] == "modelcrate"
    assert meta["extensions"] == ["binary_tensor_data"]
    assert iris_client.get("/v2/health/live").json() == {"live": True}
    ready = iris_client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_numeric_model_declares_one_fp32_tensor(iris_client: AppClient) -> None:
    meta = iris_client.get("/v2/models/iris").json()
    assert meta == {
        "name": "iris",
        "versions": [_version(iris_client)],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }


def test_mixed_model_declares_one_tensor_per_column(churn_client: AppClient) -> None:
    meta = churn_client.get("/v2/models/churn").json()
    assert meta["inputs"] == [
        {"name": "age", "datatype": "FP32", "shape": [-1]},
        {"name": "income", "datatype": "FP32", "shape": [-1]},
        {"name": "plan", "datatype": "BYTES", "shape": [-1]},
    ]


def test_versions_full_hex_and_prefix(iris_client: AppClient) -> None:
    version = _version(iris_client)
    digest = version.removeprefix("sha256:")
    for v in (version, digest, digest[:12], "sha256:" + digest[:7]):
        assert iris_client.get(f"/v2/models/iris/versions/{v}").status_code == 200, v
        assert iris_client.get(f"/v2/models/iris/versions/{v}/ready").json() == {
            "name": "iris",
            "ready": True,
        }
    x = np.asarray(records_array(iris_client), dtype=np.float32)
    url = f"/v2/models/iris/versions/{digest[:12]}/infer"
    assert iris_client.post(url, json=_iris_infer(x)).status_code == 200


def records_array(client: AppClient) -> list[list[float]]:
    return [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def test_infer_equals_sklearn(iris_client: AppClient, iris: Built) -> None:
    x = iris.frame.to_numpy()[::10]
    response = iris_client.post("/v2/models/iris/infer", json=_iris_infer(x, id="req-1"))
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == _version(iris_client)
    assert body["id"] == "req-1"
    label, probs = body["outputs"]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [len(x)],
        "data": list(iris.model.predict(x)),
    }
    assert (probs["name"], probs["datatype"], probs["shape"]) == ("probabilities", "FP32", [15, 3])
    got = np.array(probs["data"], dtype=np.float32).reshape(probs["shape"])
    np.testing.assert_allclose(got, iris.model.predict_proba(x), atol=1e-5)


def test_nested_data_and_requested_outputs(iris_client: AppClient) -> None:
    x = records_array(iris_client)
    body = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }
    out = iris_client.post("/v2/models/iris/infer", json=body).json()["outputs"]
    assert [o["name"] for o in out] == ["probabilities"]
    assert out[0]["shape"] == [2, 3]


def test_numeric_model_also_takes_one_tensor_per_column(
    iris_client: AppClient, iris: Built
) -> None:
    x = iris.frame.to_numpy()[:3]
    inputs = [
        {"name": name, "shape": [3, 1], "datatype": "FP32", "data": x[:, i].tolist()}
        for i, name in enumerate(iris.frame.columns)
    ]
    out = iris_client.post("/v2/models/iris/infer", json={"inputs": inputs}).json()["outputs"]
    assert out[0]["data"] == list(iris.model.predict(x))


def test_bytes_columns_equal_sklearn(churn_client: AppClient, churn: Built) -> None:
    frame = churn.frame.iloc[:25]
    inputs = [
        {"name": "age", "shape": [25], "datatype": "FP32", "data": frame["age"].tolist()},
        {"name": "income", "shape": [25, 1], "datatype": "FP32", "data": frame["income"].tolist()},
        {"name": "plan", "shape": [25], "datatype": "BYTES", "data": frame["plan"].tolist()},
    ]
    body = churn_client.post("/v2/models/churn/infer", json={"inputs": inputs}).json()
    label, probs = body["outputs"]
    assert label["data"] == [str(v) for v in churn.model.predict(frame)]
    got = np.array(probs["data"]).reshape(25, 2)
    np.testing.assert_allclose(got, churn.model.predict_proba(frame), atol=1e-5)


def test_tritonclient_request_body_is_understood(churn_client: AppClient, churn: Built) -> None:
    """The exact bytes tritonclient[http] sends in JSON mode, for BYTES and FP32 columns."""
    import tritonclient.http as httpclient

    frame = churn.frame.iloc[:5]
    inputs = []
    for name, dtype in (("age", "FP32"), ("income", "FP32"), ("plan", "BYTES")):
        values = frame[name].to_numpy().astype(object if dtype == "BYTES" else np.float32)
        tensor = httpclient.InferInput(name, [5], dtype)
        tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=False)]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs
    )
    assert json_size is None  # pure JSON
    response = churn_client.post("/v2/models/churn/infer", content=body)
    assert response.status_code == 200, response.text
    result = httpclient.InferenceServerClient.parse_response_body(response.content)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [str(v) for v in churn.model.predict(frame)]


def test_kserve_request_body_is_understood(churn_client: AppClient, churn: Built) -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

    frame = churn.frame.iloc[:5]
    tensors = []
    for name, dtype in (("age", "FP32"), ("income", "FP32"), ("plan", "BYTES")):
        values = frame[name].to_numpy().astype(object if dtype == "BYTES" else np.float32)
        tensor = InferInput(name=name, shape=[5], datatype=dtype)
        tensor.set_data_from_numpy(values, binary_data=False)
        tensors.append(tensor)
    body, json_length = InferRequest(model_name="churn", infer_inputs=tensors).to_rest()
    assert json_length is None
    response = churn_client.post("/v2/models/churn/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    result = InferResponse.from_bytes(response.content, len(response.content))
    probs = result.outputs[1].as_numpy()
    np.testing.assert_allclose(probs, churn.model.predict_proba(frame), atol=1e-5)


# -- errors: {"error": "..."} with the right status --------------------------------------------


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    return str(body["error"])


def test_unknown_model_is_404(iris_client: AppClient) -> None:
    x = np.zeros((1, 4))
    assert "'other'" in _error(iris_client.post("/v2/models/other/infer", json=_iris_infer(x)), 404)
    _error(iris_client.get("/v2/models/other"), 404)
    _error(iris_client.get("/v2/models/other/ready"), 404)


def test_unknown_version_is_404(iris_client: AppClient) -> None:
    x = np.zeros((1, 4))
    message = _error(iris_client.post("/v2/models/iris/versions/3/infer", json=_iris_infer(x)), 404)
    assert _version(iris_client) in message
    _error(iris_client.get("/v2/models/iris/versions/abc"), 404)  # prefix too short


def test_unknown_route_and_wrong_method_speak_v2(iris_client: AppClient) -> None:
    _error(iris_client.get("/v2/repository/index"), 404)
    _error(iris_client.get("/v2/models/iris/infer"), 405)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"datatype": "FP64"}, "datatype 'FP64'; the model expects FP32"),
        ({"datatype": "BYTES"}, "datatype 'BYTES'"),
        ({"shape": [2, 3]}, "shape [2, 3]; the model expects [rows, 4]"),
        ({"shape": [8]}, "shape [8]"),
        ({"shape": [3, 4]}, "has 8 values; shape [3, 4] needs 12"),
        ({"shape": [0, 4], "data": []}, "no rows"),
        ({"shape": "2x4"}, "needs a 'shape'"),
        ({"data": ["a"] * 8}, "wrong type"),
        ({"data": [[1, 2, 3, 4], [5, 6]]}, "rectangular"),
        ({"data": None}, "has no 'data'"),
        ({"data": None, "parameters": {"binary_data_size": 32}}, "binary tensor extension"),
        ({"name": "features"}, "unexpected input 'features'; model 'iris' takes 'input' (FP32)"),
    ],
)
def test_bad_tensors_are_400(iris_client: AppClient, tensor: dict[str, Any], fragment: str) -> None:
    base = {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}
    body = {"inputs": [{k: v for k, v in (base | tensor).items() if v is not None}]}
    assert fragment in _error(iris_client.post("/v2/models/iris/infer", json=body), 400)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (b'{"inputs": [1]}', "inputs[0]"),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",'
            b' "data": [1, 2, 3, 4]}],'
            b' "outputs": [{"name": "proba"}]}',
            "unknown output 'proba'",
        ),
    ],
)
def test_bad_requests_are_400(iris_client: AppClient, body: bytes, fragment: str) -> None:
    assert fragment in _error(iris_client.post("/v2/models/iris/infer", content=body), 400)


def test_column_errors_name_the_column(churn_client: AppClient) -> None:
    def infer(inputs: list[dict[str, Any]]) -> Any:
        return churn_client.post("/v2/models/churn/infer", json={"inputs": inputs})

    age = {"name": "age", "shape": [2], "datatype": "FP32", "data": [30, 40]}
    income = {"name": "income", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    plan = {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "basic"]}
    assert infer([age, income, plan]).status_code == 200
    assert "missing input 'plan'" in _error(infer([age, income]), 400)
    assert "must hold strings" in _error(infer([age, income, plan | {"data": [1, 2]}]), 400)
    three = income | {"shape": [3], "data": [1, 2, 3]}
    assert "has 3 rows; other inputs have 2" in _error(infer([age, three, plan]), 400)
    assert "more than once" in _error(infer([age, income, plan, age]), 400)


def test_null_is_a_missing_value_for_floats(churn_client: AppClient, churn: Built) -> None:
    record = records(churn, slice(0, 1))[0]
    body = {
        "inputs": [
            {"name": "age", "shape": [1], "datatype": "FP32", "data": [None]},
            {"name": "income", "shape": [1], "datatype": "FP32", "data": [record["income"]]},
            {"name": "plan", "shape": [1], "datatype": "BYTES", "data": [record["plan"]]},
        ]
    }
    # accepted as NaN, but this pipeline (a scaler and a logistic regression) cannot handle
    # NaN: its output is NaN too, which is refused as the request's fault, naming the row
    r = churn_client.post("/v2/models/churn/infer", json=body)
    assert r.status_code == 400
    assert "not a number (NaN or infinite) for row(s) [0]" in r.json()["error"]


def test_null_reaches_a_model_that_handles_missing_values(
    houses_client: AppClient, houses: Built
) -> None:
    x = houses.frame.to_numpy()[:2].astype(object)
    x[0, 0] = None
    body = {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
        ]
    }
    r = houses_client.post("/v2/models/houses/infer", json=body)
    assert r.status_code == 200, r.text
    assert all(math.isfinite(v) for v in r.json()["outputs"][0]["data"])


def test_predict_and_v2_agree(iris_client: AppClient, iris: Built) -> None:
    recs = records(iris, slice(40, 60))
    typed = iris_client.post("/predict", json=recs).json()
    x = iris.frame.to_numpy()[40:60]
    v2 = iris_client.post("/v2/models/iris/infer", json=_iris_infer(x)).json()["outputs"]
    assert [p["label"] for p in typed] == v2[0]["data"]
    flat = [p["probabilities"][c] for p in typed for c in IRIS_CLASSES]
    assert flat == v2[1]["data"]
