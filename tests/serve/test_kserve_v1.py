"""KServe V1 (``/v1/models/{name}:predict``), in process: records and value lists, errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve.asgi import AppClient
from tests.serve.crates import IRIS_CLASSES, Built, records

PREDICT = "/v1/models/iris:predict"


def _error(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


def test_model_readiness(iris_client: AppClient) -> None:
    response = iris_client.get("/v1/models/iris")
    assert (response.status_code, response.json()) == (200, {"name": "iris", "ready": True})
    assert "'other'" in _error(iris_client.get("/v1/models/other"), 404)


def test_records_equal_predict(iris_client: AppClient, iris: Built) -> None:
    recs = records(iris, slice(0, 150, 9))
    v1 = iris_client.post(PREDICT, json={"instances": recs})
    assert v1.status_code == 200, v1.text
    body = v1.json()
    assert list(body) == ["predictions"]
    assert body["predictions"] == iris_client.post("/predict", json=recs).json()
    x = iris.frame.to_numpy()[0:150:9]
    assert [p["label"] for p in body["predictions"]] == list(iris.model.predict(x))
    assert list(body["predictions"][0]["probabilities"]) == list(IRIS_CLASSES)


def test_value_lists_in_signature_order(iris_client: AppClient, iris: Built) -> None:
    x = iris.frame.to_numpy()[40:60]
    by_list = iris_client.post(PREDICT, json={"instances": x.tolist()}).json()
    by_record = iris_client.post(PREDICT, json={"instances": records(iris, slice(40, 60))}).json()
    assert by_list == by_record
    assert [p["label"] for p in by_list["predictions"]] == list(iris.model.predict(x))


def test_mixed_model_lists_and_records(churn_client: AppClient, churn: Built) -> None:
    frame = churn.frame.iloc[:12]
    recs = records(churn, slice(0, 12))
    lists = [[r["age"], r["income"], r["plan"]] for r in recs]
    instances: list[Any] = [*recs[:6], *lists[6:]]
    response = churn_client.post("/v1/models/churn:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert [str(v) for v in labels] == [str(v) for v in churn.model.predict(frame)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "non-empty 'instances' list"),
        (b'{"instances": []}', "non-empty 'instances' list"),
        (b'{"inputs": [[1, 2, 3, 4]]}', "non-empty 'instances' list"),
        (b'{"instances": [[1, 2, 3]]}', "instances[0] has 3 values; the model takes 4"),
        (b'{"instances": [[1, 2, 3, 4], 5]}', "instances[1] must be a record"),
        (
            b'{"instances": [[1, 2, 3, 4], [1, 2, "x", 4]]}',
            "invalid instances: instances[1].petal length (cm)",
        ),
        (b'{"instances": [{"sepal length (cm)": 1}]}', "instances[0].sepal width (cm)"),
    ],
)
def test_bad_requests_are_400(iris_client: AppClient, body: bytes, fragment: str) -> None:
    assert fragment in _error(iris_client.post(PREDICT, content=body))


def test_unknown_model_is_404(iris_client: AppClient) -> None:
    response = iris_client.post("/v1/models/other:predict", json={"instances": [[1, 2, 3, 4]]})
    assert "'other' is not served here" in _error(response, 404)


def test_openapi_documents_v1_without_422(iris_client: AppClient) -> None:
    paths = iris_client.get("/openapi.json").json()["paths"]
    for path in ("/v1/models/{name}", "/v1/models/{name}:predict"):
        for operation in paths[path].values():
            assert "422" not in operation["responses"]
            assert "4XX" in operation["responses"]
