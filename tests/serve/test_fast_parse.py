"""The fast JSON path of ``/predict`` (``Codec.parse_matrix``) never disagrees with the
validator: whatever it accepts, the validator accepts with the same values; whatever the
validator refuses, it refuses (so the 422 comes from the validator, as typed)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.serve import Codec

SIG = Signature(
    inputs=(Column("a b", "float32"), Column("c", "float32"), Column("d", "float64")),
    outputs=(Output("label", "string"),),
    classes=("x", "y"),
    task="classification",
    tensor_input=True,
)
CODEC = Codec(SIG, "m")
NAMES = ("a b", "c", "d")

values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.sampled_from([1e39, -3.5e38, 3.4028234663852886e38, 10**400, 2**64]),
    st.lists(st.integers(), max_size=2),
)
record = st.one_of(
    st.fixed_dictionaries({n: values for n in NAMES}),
    st.dictionaries(st.sampled_from([*NAMES, "extra"]), values, max_size=4),
)
body = st.one_of(record, st.lists(record, max_size=4), values)


def _encode(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(doc).encode()


@settings(max_examples=600, deadline=None)
@given(body)
def test_fast_path_agrees_with_the_validator(doc: Any) -> None:
    data = _encode(doc)
    fast = CODEC.parse_matrix(data)
    try:
        records, single = CODEC.parse_json(data)
    except ValidationError:
        assert fast is None  # refused: the validator reports why
        return
    if fast is None:
        return  # the slow path serves it
    inputs, rows, fast_single = fast
    expected = CODEC.to_inputs(records)
    assert (rows, fast_single) == (len(records), single)
    assert inputs.keys() == expected.keys()
    for name, arr in inputs.items():
        assert arr.dtype == expected[name].dtype
        np.testing.assert_array_equal(arr, expected[name])


def test_valid_records_take_the_fast_path() -> None:
    one = {"a b": 1, "c": 2.5, "d": None}
    fast = CODEC.parse_matrix(orjson.dumps(one))
    assert fast is not None
    inputs, rows, single = fast
    assert (rows, single) == (1, True)
    row = inputs["input"][0]
    assert row[:2].tolist() == [1.0, 2.5]
    assert math.isnan(row[2])
    fast = CODEC.parse_matrix(orjson.dumps([one, one]))
    assert fast is not None
    assert fast[1:] == (2, False)


def test_anything_else_goes_to_the_validator() -> None:
    for doc in (
        {"a b": True, "c": 1, "d": 1},  # a bool is not a number
        {"a b": "1", "c": 1, "d": 1},  # nor a numeric string
        {"a b": 1e39, "c": 1, "d": 1},  # beyond float32
        {"a b": 1, "c": 1},  # a field missing
        {"a b": 1, "c": 1, "d": 1, "e": 1},  # one too many
        [],
        "x",
    ):
        assert CODEC.parse_matrix(orjson.dumps(doc)) is None
    assert CODEC.parse_matrix(b"{not json") is None
