"""Types generated from a signature: every dtype, its JSON Schema, and the arrays it becomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.serve import Codec, ModelInfo, build_app
from modelcrate.serve.schema import type_prefix
from tests.serve.asgi import AppClient

SIG = Signature(
    inputs=(
        Column("f32", "float32"),
        Column("f64", "float64"),
        Column("i32", "int32"),
        Column("i64", "int64"),
        Column("flag", "bool"),
        Column("city", "string", ("Paris", "Oslo")),
        Column("note", "string"),
    ),
    outputs=(Output("prediction", "float64"), Output("embedding", "float32", (2,))),
    task="other",
)
RECORD = {"f32": 1.5, "f64": 2, "i32": -3, "i64": 2**40, "flag": True, "city": "Oslo", "note": ""}


class Echo:
    """Reports the dtypes and shapes it was given (a stand-in for a model, for dtype checks)."""

    signature = SIG

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, tuple[int, ...]]] = {}

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen = {k: (v.dtype.str, v.shape) for k, v in inputs.items()}
        rows = len(inputs["f32"])
        return {
            "prediction": np.asarray(inputs["i64"], dtype=np.float64),
            "embedding": np.ones((rows, 2), dtype=np.float32),
        }


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(SIG, "my-model.v2")


def test_type_prefix() -> None:
    assert type_prefix("iris") == "Iris"
    assert type_prefix("my-model.v2") == "MyModelV2"
    assert type_prefix("2024_churn") == "Model2024Churn"


def test_every_dtype_validates_and_converts(codec: Codec) -> None:
    records, single = codec.parse_json(b'{"f32": 1.5, "f64": 2, "i32": -3, "i64": 1099511627776,'
                                       b' "flag": true, "city": "Oslo", "note": ""}')  # fmt: skip
    assert single
    assert records == [RECORD | {"f64": 2.0}]
    arrays = codec.to_inputs(records * 3)
    assert {k: (v.dtype, v.shape) for k, v in arrays.items()} == {
        "f32": (np.float32, (3,)),
        "f64": (np.float64, (3,)),
        "i32": (np.int32, (3,)),
        "i64": (np.int64, (3,)),
        "flag": (np.bool_, (3,)),
        "city": (object, (3,)),
        "note": (object, (3,)),
    }
    assert arrays["i64"][0] == 2**40


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("i32", 2**31, "less_than_equal"),
        ("i32", 1.5, "int_type"),  # strict types: JSON numbers only, of the column's kind
        ("i64", "7", "int_type"),
        ("flag", "maybe", "bool_type"),
        ("flag", 1, "bool_type"),
        ("f32", True, "float_type"),
        ("f32", 1e39, "less_than_equal"),  # beyond float32
        ("city", 3, "string_type"),
        ("f32", "x", "float_type"),
        ("f32", None, None),  # null: a missing value, NaN
    ],
)
def test_field_errors(codec: Codec, field: str, value: Any, error_type: str | None) -> None:
    record = RECORD | {field: value}
    if error_type is None:
        codec.validate_records([record])
        return
    with pytest.raises(ValidationError) as info:
        codec.validate_records([record])
    (error,) = info.value.errors()
    assert error["loc"] == (0, field)
    assert error["type"] == error_type


def test_null_float_becomes_nan(codec: Codec) -> None:
    arrays = codec.to_inputs(codec.validate_records([RECORD | {"f32": None}]))
    assert np.isnan(arrays["f32"][0])


def test_json_schema_of_the_record(codec: Codec) -> None:
    record = codec.schema.components["MyModelV2Record"]
    props = record["properties"]
    assert props["i32"]["type"] == "integer"
    assert (props["i32"]["minimum"], props["i32"]["maximum"]) == (-(2**31), 2**31 - 1)
    assert props["flag"]["type"] == "boolean"
    assert props["city"]["type"] == "string"
    assert "Paris, Oslo" in props["city"]["description"]
    assert props["city"]["examples"] == ["Paris"]
    assert record["additionalProperties"] is False
    prediction = codec.schema.components["MyModelV2Prediction"]["properties"]
    assert prediction["prediction"]["type"] == "number"
    assert prediction["embedding"] == {
        "description": "float32 [2]",
        "items": {"type": "number"},
        "title": "Embedding",
        "type": "array",
    }


def test_outputs_with_a_shape_and_v2_int_and_bool_tensors() -> None:
    echo = Echo()
    info = ModelInfo(name="echo", version="sha256:" + "ab" * 32, signature=SIG)
    with AppClient(build_app(info, lambda: echo)) as client:
        body = client.post("/predict", json=[RECORD, RECORD]).json()
        assert body == [{"prediction": 2.0**40, "embedding": [1.0, 1.0]}] * 2
        meta = client.get("/v2/models/echo").json()
        assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
            ("f32", "FP32"),
            ("f64", "FP64"),
            ("i32", "INT32"),
            ("i64", "INT64"),
            ("flag", "BOOL"),
            ("city", "BYTES"),
            ("note", "BYTES"),
        ]
        assert meta["outputs"][1] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 2]}
        tensors = [
            {
                "name": t["name"],
                "datatype": t["datatype"],
                "shape": [1],
                "data": [RECORD[t["name"]]],
            }
            for t in meta["inputs"]
        ]
        out = client.post("/v2/models/echo/infer", json={"inputs": tensors}).json()["outputs"]
        assert out[0] == {"name": "prediction", "datatype": "FP64", "shape": [1], "data": [2.0**40]}
        assert out[1]["shape"] == [1, 2]
        assert echo.seen["i32"] == ("<i4", (1,))
        assert echo.seen["flag"] == ("|b1", (1,))
        # an int tensor refuses floats, a bool tensor refuses numbers
        bad = [t | {"data": [1.5]} if t["name"] == "i32" else t for t in tensors]
        response = client.post("/v2/models/echo/infer", json={"inputs": bad})
        assert response.status_code == 400
        assert "'i32' (INT32) holds values of the wrong type" in response.json()["error"]
        bad = [t | {"data": [1]} if t["name"] == "flag" else t for t in tensors]
        assert client.post("/v2/models/echo/infer", json={"inputs": bad}).status_code == 400
        bad = [t | {"data": [2**40]} if t["name"] == "i32" else t for t in tensors]
        response = client.post("/v2/models/echo/infer", json={"inputs": bad})
        assert response.status_code == 400
        assert "invalid values" in response.json()["error"]
