"""``POST /predict``: typed records in, labels and per-class probabilities out, 422 on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serve.asgi import AppClient
from tests.serve.crates import IRIS_CLASSES, IRIS_FEATURES, Built, records


def test_one_record_answers_one_prediction_equal_to_sklearn(
    iris_client: AppClient, iris: Built
) -> None:
    record = records(iris, slice(60, 61))[0]
    response = iris_client.post("/predict", json=record)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"label", "probabilities"}
    x = np.array([[record[n] for n in IRIS_FEATURES]], dtype=np.float32)
    assert body["label"] == iris.model.predict(x)[0]
    assert list(body["probabilities"]) == list(IRIS_CLASSES)
    expected = iris.model.predict_proba(x)[0]
    np.testing.assert_allclose(
        [body["probabilities"][c] for c in IRIS_CLASSES], expected, atol=1e-5
    )


@pytest.mark.parametrize("rows", [1, 7, 150])  # 150 rows run in a worker thread
def test_list_of_records_answers_a_list_in_order(
    iris_client: AppClient, iris: Built, rows: int
) -> None:
    recs = records(iris, slice(0, rows))
    response = iris_client.post("/predict", json=recs)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert len(body) == rows
    x = iris.frame.iloc[:rows].to_numpy()
    assert [p["label"] for p in body] == list(iris.model.predict(x))
    got = np.array([[p["probabilities"][c] for c in IRIS_CLASSES] for p in body])
    np.testing.assert_allclose(got, iris.model.predict_proba(x), atol=1e-5)


def test_pipeline_with_string_column_and_integer_labels(
    churn_client: AppClient, churn: Built
) -> None:
    recs = records(churn, slice(0, 40))
    body = churn_client.post("/predict", json=recs).json()
    frame = churn.frame.iloc[:40]
    assert [p["label"] for p in body] == [str(v) for v in churn.model.predict(frame)]
    got = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in body])
    np.testing.assert_allclose(got, churn.model.predict_proba(frame), atol=1e-5)


def test_unknown_category_is_accepted_like_the_model_does(churn_client: AppClient) -> None:
    record = {"age": 30.0, "income": 40.0, "plan": "enterprise"}  # handle_unknown="ignore"
    response = churn_client.post("/predict", json=record)
    assert response.status_code == 200
    assert response.json()["label"] in ("0", "1")


def test_regressor_answers_prediction(houses_client: AppClient, houses: Built) -> None:
    recs = records(houses, slice(0, 10))
    body = houses_client.post("/predict", json=recs).json()
    expected = houses.model.predict(houses.frame.iloc[:10].to_numpy())
    np.testing.assert_allclose([p["prediction"] for p in body], expected, rtol=1e-5, atol=1e-3)


def test_integers_are_accepted_for_float_fields(iris_client: AppClient) -> None:
    record = dict.fromkeys(IRIS_FEATURES, 1)
    assert iris_client.post("/predict", json=record).status_code == 200


# -- 422: every problem names its record and field ------------------------------------------


def _detail(response: object) -> list[dict[str, object]]:
    assert response.status_code == 422  # type: ignore[attr-defined]
    return response.json()["detail"]  # type: ignore[attr-defined,no-any-return]


def test_missing_field_is_named(iris_client: AppClient, iris: Built) -> None:
    record = records(iris, slice(0, 1))[0]
    del record["petal width (cm)"]
    detail = _detail(iris_client.post("/predict", json=record))
    assert detail == [
        {"type": "missing", "loc": ["body", "petal width (cm)"], "msg": "Field required",
         "input": record}
    ]  # fmt: skip


def test_wrong_type_is_named_with_its_record_index(iris_client: AppClient, iris: Built) -> None:
    recs = records(iris, slice(0, 3))
    recs[2]["sepal width (cm)"] = "wide"
    detail = _detail(iris_client.post("/predict", json=recs))
    assert len(detail) == 1
    assert detail[0]["loc"] == ["body", 2, "sepal width (cm)"]
    assert detail[0]["type"] == "float_type"  # strict: a string is not a number
    assert detail[0]["input"] == "wide"


def test_string_column_refuses_a_number(churn_client: AppClient) -> None:
    detail = _detail(churn_client.post("/predict", json={"age": 1, "income": 2, "plan": 3}))
    assert detail[0]["loc"] == ["body", "plan"]
    assert detail[0]["type"] == "string_type"


def test_unknown_field_is_refused(iris_client: AppClient, iris: Built) -> None:
    record = records(iris, slice(0, 1))[0] | {"sepal_lenght": 1.0}
    detail = _detail(iris_client.post("/predict", json=record))
    assert detail[0]["loc"] == ["body", "sepal_lenght"]
    assert detail[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (b"[]", "too_short"),
        (b"{not json", "json_invalid"),
        (b"", "json_invalid"),
        (b"42", "dict_type"),
        (b"[1, 2]", "dict_type"),
    ],
)
def test_malformed_bodies_are_422(iris_client: AppClient, body: bytes, error_type: str) -> None:
    detail = _detail(iris_client.post("/predict", content=body))
    assert detail[0]["type"] == error_type
    assert detail[0]["loc"][0] == "body"


def test_many_errors_are_capped(iris_client: AppClient) -> None:
    detail = _detail(iris_client.post("/predict", json=[{"x": 1}] * 100))
    assert len(detail) == 51
    assert detail[-1]["type"] == "too_many_errors"


# -- the contract in OpenAPI ------------------------------------------------------------------


def test_openapi_documents_the_typed_contract(iris_client: AppClient) -> None:
    doc = iris_client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    record = schemas["IrisRecord"]
    assert list(record["properties"]) == list(IRIS_FEATURES)
    assert record["required"] == list(IRIS_FEATURES)
    assert record["additionalProperties"] is False
    number = record["properties"]["sepal length (cm)"]["anyOf"][0]
    assert number == {
        "type": "number",
        "minimum": -3.4028234663852886e38,
        "maximum": 3.4028234663852886e38,
    }
    prediction = schemas["IrisPrediction"]
    assert prediction["properties"]["label"]["enum"] == list(IRIS_CLASSES)
    assert list(schemas["IrisProbabilities"]["properties"]) == list(IRIS_CLASSES)

    op = doc["paths"]["/predict"]["post"]
    request = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/IrisRecord"} in request["anyOf"]
    response = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/IrisPrediction"} in response["anyOf"]
    error = op["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/PredictValidationError"}
    assert "PredictValidationError" in schemas
    # every $ref resolves
    text = iris_client.get("/openapi.json").text
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    assert "/v2/models/{name}/infer" in doc["paths"]


def test_docs_page_is_served(iris_client: AppClient) -> None:
    response = iris_client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_index_names_the_model(iris_client: AppClient, iris: Built) -> None:
    body = iris_client.get("/").json()
    assert body["name"] == "iris"
    assert body["version"].startswith("sha256:")
    assert body["ready"] is True


def test_openapi_documents_no_422_for_v2_routes(iris_client: AppClient) -> None:
    doc = iris_client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for operation in item.values():
            assert ("422" in operation["responses"]) == (path == "/predict"), path
    assert "HTTPValidationError" not in doc["components"]["schemas"]
