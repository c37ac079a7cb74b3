"""The V2 binary tensor data extension, in process: the exact bytes tritonclient[http] and the
kserve SDK send in binary mode, binary outputs, BYTES tensors, and every framing error as 400."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from modelcrate.serve.v2_binary import HEADER
from tests.serve.asgi import AppClient
from tests.serve.crates import Built

INFER = "/v2/models/iris/infer"


def _binary_body(doc: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(doc)
    return header + b"".join(blobs), {HEADER: str(len(header))}


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def _error(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


def test_tritonclient_binary_inputs_and_outputs(iris_client: AppClient, iris: Built) -> None:
    """tritonclient's defaults: binary inputs, and with no outputs named, binary_data_output."""
    import tritonclient.http as httpclient

    x = iris.frame.to_numpy()[::3]  # 50 rows
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary_data=True
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert json_size is not None
    response = iris_client.post(INFER, content=body, headers={HEADER: str(json_size)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers[HEADER])
    header = orjson.loads(response.content[:header_length])
    assert all("data" not in o and o["parameters"]["binary_data_size"] for o in header["outputs"])
    result = httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=header_length
    )
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == list(iris.model.predict(x))
    probs = result.as_numpy("probabilities")
    assert probs.shape == (50, 3)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, iris.model.predict_proba(x), atol=1e-5)


def test_binary_and_json_outputs_mixed(iris_client: AppClient, iris: Built) -> None:
    """A binary request may ask for some outputs as JSON and others as binary."""
    import tritonclient.http as httpclient

    x = iris.frame.to_numpy()[:7]
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
    ]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id="mixed-1"
    )
    response = iris_client.post(INFER, content=body, headers={HEADER: str(json_size)})
    assert response.status_code == 200, response.text
    header_length = int(response.headers[HEADER])
    header = orjson.loads(response.content[:header_length])
    assert header["id"] == "mixed-1"
    label, probs = header["outputs"]
    assert label["data"] == list(iris.model.predict(x))
    assert probs["parameters"] == {"binary_data_size": 7 * 3 * 4}
    raw = np.frombuffer(response.content[header_length:], dtype="<f4").reshape(7, 3)
    np.testing.assert_allclose(raw, iris.model.predict_proba(x), atol=1e-5)


def test_binary_request_json_response(iris_client: AppClient, iris: Built) -> None:
    """Binary inputs with JSON outputs: a plain JSON response without the header."""
    x = iris.frame.to_numpy()[:4]
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": [4, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": "label"}],
    }
    body, headers = _binary_body(doc, x.astype("<f4").tobytes())
    response = iris_client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert HEADER.lower() not in response.headers
    assert response.json()["outputs"][0]["data"] == list(iris.model.predict(x))


def test_json_request_with_binary_output(iris_client: AppClient, iris: Built) -> None:
    """binary_data_output on a JSON request: the output comes back binary."""
    x = iris.frame.to_numpy()[:2]
    doc = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": False}},
        ],
    }
    response = iris_client.post(INFER, json=doc)
    assert response.status_code == 200, response.text
    n = int(response.headers[HEADER])
    label, probs = orjson.loads(response.content[:n])["outputs"]
    assert "data" in probs  # its own binary_data=False wins over binary_data_output
    size = label["parameters"]["binary_data_size"]
    raw = response.content[n:]
    assert len(raw) == size
    expected = list(iris.model.predict(x))
    assert raw == _bytes_tensor(expected)


def test_bytes_columns_binary_equal_sklearn(churn_client: AppClient, churn: Built) -> None:
    """String features as binary BYTES tensors (length-prefixed UTF-8), beside FP32 columns."""
    import tritonclient.http as httpclient

    frame = churn.frame.iloc[:40]
    inputs = []
    for name, dtype in (("age", "FP32"), ("income", "FP32"), ("plan", "BYTES")):
        values = frame[name].to_numpy().astype(object if dtype == "BYTES" else np.float32)
        tensor = httpclient.InferInput(name, [40], dtype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    response = churn_client.post(
        "/v2/models/churn/infer", content=body, headers={HEADER: str(json_size)}
    )
    assert response.status_code == 200, response.text
    result = httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers[HEADER])
    )
    assert [v.decode() for v in result.as_numpy("label")] == [
        str(v) for v in churn.model.predict(frame)
    ]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), churn.model.predict_proba(frame), atol=1e-5
    )


def test_unicode_bytes_element(churn_client: AppClient) -> None:
    """A BYTES element is decoded as UTF-8; an unknown category is the model's business."""
    age = np.array([30, 50], dtype="<f4").tobytes()
    plan = _bytes_tensor(["pro", "größer"])
    doc = {
        "inputs": [
            {
                "name": "age",
                "shape": [2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 8},
            },
            {"name": "income", "shape": [2], "datatype": "FP32", "data": [1000, 2000]},
            {
                "name": "plan",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(plan)},
            },
        ]
    }
    body, headers = _binary_body(doc, age, plan)
    response = churn_client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_kserve_sdk_binary_request_body(churn_client: AppClient, churn: Built) -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

    frame = churn.frame.iloc[:6]
    tensors = []
    for name, dtype in (("age", "FP32"), ("income", "FP32"), ("plan", "BYTES")):
        values = frame[name].to_numpy().astype(object if dtype == "BYTES" else np.float32)
        tensor = InferInput(name=name, shape=[6], datatype=dtype)
        tensor.set_data_from_numpy(values, binary_data=True)
        tensors.append(tensor)
    request = InferRequest(
        model_name="churn",
        infer_inputs=tensors,
        parameters={"binary_data_output": True},
    )
    body, json_length = request.to_rest()
    assert json_length is not None
    response = churn_client.post(
        "/v2/models/churn/infer", content=body, headers={HEADER: str(json_length)}
    )
    assert response.status_code == 200, response.text
    result = InferResponse.from_bytes(response.content, int(response.headers[HEADER]))
    outputs = {o.name: o.as_numpy() for o in result.outputs}
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["label"]]
    assert labels == [str(v) for v in churn.model.predict(frame)]
    np.testing.assert_allclose(
        outputs["probabilities"], churn.model.predict_proba(frame), atol=1e-5
    )


def test_regressor_binary_output(houses_client: AppClient, houses: Built) -> None:
    x = houses.frame.to_numpy()[:9]
    meta = houses_client.get("/v2/models/houses").json()
    (tensor,) = meta["inputs"]
    (output,) = meta["outputs"]
    doc = {
        "inputs": [
            {
                "name": tensor["name"],
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = _binary_body(doc, x.astype("<f4").tobytes())
    response = houses_client.post("/v2/models/houses/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    n = int(response.headers[HEADER])
    (out,) = orjson.loads(response.content[:n])["outputs"]
    wire = {"FP32": "<f4", "FP64": "<f8"}[output["datatype"]]
    got = np.frombuffer(response.content[n:], dtype=wire).reshape(out["shape"])
    np.testing.assert_allclose(got.reshape(-1), houses.model.predict(x).reshape(-1), rtol=1e-4)


# -- errors ---------------------------------------------------------------------------------


def _iris_doc(size: int, shape: list[int] | None = None, **tensor: Any) -> dict[str, Any]:
    t = {
        "name": "input",
        "shape": shape or [2, 4],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [t | tensor]}


@pytest.mark.parametrize(
    ("header", "fragment"),
    [("abc", "must be a non-negative integer"), ("-1", "is -1"), ("100000", "body has")],
)
def test_bad_header_length_is_400(iris_client: AppClient, header: str, fragment: str) -> None:
    body, _ = _binary_body(_iris_doc(32), bytes(32))
    response = iris_client.post(INFER, content=body, headers={HEADER: header})
    assert fragment in _error(response)


@pytest.mark.parametrize(
    ("doc", "blob", "fragment"),
    [
        (_iris_doc(32), bytes(16), "runs past the end of the body"),
        (_iris_doc(16), bytes(32), "add up to 16"),
        (_iris_doc(16), bytes(16), "has 16 bytes of binary data; 8 FP32 values need 32"),
        (_iris_doc(-4), bytes(0), "binary_data_size must be a non-negative integer"),
        (_iris_doc(32, data=[0.0] * 8), bytes(32), "both 'data' and binary_data_size"),
        (_iris_doc(24, shape=[2, 3]), bytes(24), "the model expects [rows, 4]"),
        ({"inputs": []}, b"", "non-empty list"),
    ],
)
def test_bad_binary_data_is_400(
    iris_client: AppClient, doc: dict[str, Any], blob: bytes, fragment: str
) -> None:
    body, headers = _binary_body(doc, blob)
    assert fragment in _error(iris_client.post(INFER, content=body, headers=headers))


def test_binary_without_header_is_400(iris_client: AppClient) -> None:
    message = _error(iris_client.post(INFER, json=_iris_doc(32)))
    assert HEADER in message
    assert "binary tensor extension" in message


def test_bad_header_json_is_400(iris_client: AppClient) -> None:
    response = iris_client.post(INFER, content=b"{not json" + bytes(8), headers={HEADER: "9"})
    assert "not valid JSON" in _error(response)


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        (b"\x03\x00\x00\x00pro\x05\x00\x00\x00bas", "declares 5 bytes; only 3 are left"),
        (b"\x03\x00\x00\x00pro\x01\x00", "has no 4-byte length"),
        (b"\x03\x00\x00\x00pro\x01\x00\x00\x00\xff", "is not UTF-8"),
        (b"\x03\x00\x00\x00pro\x01\x00\x00\x00ab", "1 bytes left over"),
    ],
)
def test_bad_bytes_tensor_is_400(churn_client: AppClient, plan: bytes, fragment: str) -> None:
    doc = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "data": [30, 40]},
            {"name": "income", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {
                "name": "plan",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(plan)},
            },
        ]
    }
    body, headers = _binary_body(doc, plan)
    response = churn_client.post("/v2/models/churn/infer", content=body, headers=headers)
    message = _error(response)
    assert "input 'plan' (BYTES)" in message
    assert fragment in message
