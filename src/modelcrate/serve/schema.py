"""Request and response types of ``POST /predict``, generated from the model's signature.

Built once per app: a record is a ``TypedDict`` whose keys are the signature's column names
(any spelling, e.g. ``"sepal length (cm)"``) and whose values are typed by the column dtype;
unknown keys are refused. Pydantic's validators compile once here; each request then costs one
``validate_json`` call in Rust, and validation errors name the record index and the field.
The JSON Schemas of the same types go into ``/openapi.json``.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.serve.codec import FLOAT32_MAX
from modelcrate.serve.validation import RecordValidator

REF_TEMPLATE = "#/components/schemas/{model}"
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# Types built at run time from the signature: valid for Pydantic, opaque to type checkers,
# so the typing constructors are used through ``Any`` aliases.
_typed_dict: Any = TypedDict
_annotated: Any = Annotated
_literal: Any = Literal
_list: Any = list
_union: Any = Union


class PredictSchema:
    """The compiled validators and the OpenAPI schemas of one model's ``/predict``.

    The validators compile at once (every request needs them); the JSON Schemas are generated
    on first use (only ``/openapi.json`` needs them: a server's start-up does not pay for them).
    """

    def __init__(
        self,
        record: Any,
        prediction: Any,
        record_name: str,
        prediction_name: str,
        names: tuple[str, ...] = (),
    ):
        self.record_name = record_name
        self.prediction_name = prediction_name
        self._record = record
        self._prediction = prediction
        self._names = names
        self.one: TypeAdapter[Any] = TypeAdapter(record)  # a single record
        # a non-empty list of records, validation stopping at the first invalid one (the
        # server's: serve.validation reports the errors, a bounded number of them)
        self.many_fast: TypeAdapter[Any] = TypeAdapter(
            _annotated[_list[record], Field(min_length=1, fail_fast=True)]
        )

    @cached_property
    def many(self) -> TypeAdapter[Any]:
        """A non-empty list of records, every error reported (for local files)."""
        return TypeAdapter(_annotated[_list[self._record], Field(min_length=1)])

    @cached_property
    def chunk(self) -> TypeAdapter[Any]:
        """A list of records, every error reported (a few records at a time)."""
        return TypeAdapter(_list[self._record])

    @cached_property
    def validator(self) -> RecordValidator:
        """Validation with bounded work and bounded errors (``serve.validation``)."""
        return RecordValidator(self, self._names)

    @property
    def request(self) -> dict[str, Any]:
        """The requestBody schema (refs into ``components``)."""
        return self._json_schemas[0]

    @property
    def response(self) -> dict[str, Any]:
        """The 200 response schema."""
        return self._json_schemas[1]

    @property
    def components(self) -> dict[str, Any]:
        """Named schemas for ``components/schemas``."""
        return self._json_schemas[2]

    @cached_property
    def _json_schemas(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        record, prediction = self._record, self._prediction
        request_t: TypeAdapter[Any] = TypeAdapter(
            _annotated[
                _union[record, _list[record]],
                Field(description="one record, or a non-empty list of records"),
            ]
        )
        response_t: TypeAdapter[Any] = TypeAdapter(
            _annotated[
                _union[prediction, _list[prediction]],
                Field(description="one prediction per record; a list when the request was a list"),
            ]
        )
        error_t: TypeAdapter[Any] = TypeAdapter(ValidationErrorBody)
        schemas, defs = TypeAdapter.json_schemas(
            [
                ("request", "validation", request_t),
                ("response", "serialization", response_t),
                ("error", "serialization", error_t),
            ],
            ref_template=REF_TEMPLATE,
        )
        components = dict(defs.get("$defs", {}))
        components["PredictValidationError"] = schemas[("error", "serialization")]
        return (
            schemas[("request", "validation")],
            schemas[("response", "serialization")],
            components,
        )


def type_prefix(model_name: str) -> str:
    """``"iris-v2.onnx"`` -> ``"IrisV2Onnx"``: a schema-name prefix from the crate name."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", model_name) if p]
    prefix = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return prefix if prefix[0].isalpha() else "Model" + prefix


def _input_type(col: Column, float32: bool = False) -> Any:
    """Strict types: a number field takes JSON numbers only (not ``true`` or ``"3"``), finite
    and within the column's range (a float32 column cannot hold 1e39, nor can a float64 column
    that the model takes in a float32 tensor: ``float32``); null is a missing value for float
    columns."""
    if col.dtype in ("float32", "float64"):
        limit = FLOAT32_MAX if col.dtype == "float32" or float32 else None
        return _annotated[
            float | None,
            Field(
                strict=True,
                allow_inf_nan=False,
                ge=-limit if limit else None,
                le=limit,
                description=f"{col.dtype}; null means a missing value (NaN)",
                examples=[0.0],
            ),
        ]
    if col.dtype in ("int32", "int64"):
        lo, hi = INT32 if col.dtype == "int32" else INT64
        return _annotated[
            int, Field(strict=True, ge=lo, le=hi, description=col.dtype, examples=[0])
        ]
    if col.dtype == "bool":
        return _annotated[bool, Field(strict=True, description="bool", examples=[False])]
    if col.categories:
        shown = ", ".join(col.categories[:20]) + (", ..." if len(col.categories) > 20 else "")
        return _annotated[
            str,
            Field(
                strict=True,
                description=f"string; known categories: {shown}",
                examples=[col.categories[0]],
            ),
        ]
    return _annotated[str, Field(strict=True, description="string", examples=[""])]


def _scalar(dtype: str) -> Any:
    return {"string": str, "bool": bool, "int32": int, "int64": int}.get(dtype, float)


def _output_type(out: Output, sig: Signature, prefix: str) -> Any:
    if out.name == "probabilities" and sig.classes:
        probs = _typed_dict(f"{prefix}Probabilities", {c: float for c in sig.classes})
        probs.__pydantic_config__ = ConfigDict(title=f"{prefix}Probabilities")
        return _annotated[probs, Field(description="probability of each class, by class label")]
    if out.name == "label" and sig.classes:
        return _annotated[
            _literal[tuple(sig.classes)],
            Field(description="the predicted class label"),
        ]
    base = _scalar(out.dtype)
    if out.shape:
        return _annotated[_list[base], Field(description=f"{out.dtype} {list(out.shape)}")]
    return _annotated[base, Field(description=out.dtype)]


def build_predict_schema(sig: Signature, model_name: str) -> PredictSchema:
    """Compile the record validators and the request/response JSON Schemas for ``sig``."""
    prefix = type_prefix(model_name)
    record_name, prediction_name = f"{prefix}Record", f"{prefix}Prediction"

    float32 = sig.tensor_input and sig.tensor_dtype == "float32"
    record = _typed_dict(record_name, {c.name: _input_type(c, float32) for c in sig.inputs})
    record.__pydantic_config__ = ConfigDict(extra="forbid", title=record_name)
    prediction = _typed_dict(
        prediction_name, {o.name: _output_type(o, sig, prefix) for o in sig.outputs}
    )
    prediction.__pydantic_config__ = ConfigDict(title=prediction_name)

    names = tuple(sig.feature_names)
    return PredictSchema(record, prediction, record_name, prediction_name, names)


class ValidationErrorItem(TypedDict):
    """One problem in a request, as FastAPI reports it: where, what, and the offending value."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(TypedDict):
    """The 422 body: ``detail`` lists every problem found, each naming its field."""

    detail: list[ValidationErrorItem]
