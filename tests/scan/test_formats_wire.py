"""The bounded protobuf wire reader and the ONNX/SavedModel sniffers.

Also home of a tiny protobuf *writer* that the other format tests use to hand-encode samples.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.scan.protobuf_wire import (
    LEN,
    VARINT,
    Reader,
    TooManyFields,
    WireError,
    iter_fields,
    looks_like_onnx,
    looks_like_savedmodel,
    read_varint,
)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(number: int, value: int) -> bytes:
    """A varint field."""
    return varint(number << 3 | VARINT) + varint(value)


def fl(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (string, bytes or sub-message)."""
    raw = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | LEN) + varint(len(raw)) + raw


def onnx_model(graph: bytes, *, opsets: tuple[tuple[str, int], ...] = (("", 17),)) -> bytes:
    """ModelProto: ir_version(1), producer_name(2), graph(7), opset_import(8)."""
    out = fv(1, 8) + fl(2, "modelcrate-tests")
    out += fl(7, graph)
    for domain, version in opsets:
        out += fl(8, fl(1, domain) + fv(2, version))
    return out


def test_varint_roundtrip_and_limits() -> None:
    for n in (0, 1, 127, 128, 300, 2**32, 2**63):
        assert read_varint(varint(n), 0, len(varint(n))) == (n, len(varint(n)))
    with pytest.raises(WireError, match="truncated"):
        read_varint(b"\x80\x80", 0, 2)
    with pytest.raises(WireError, match="longer than 10"):
        read_varint(b"\xff" * 11 + b"\x01", 0, 12)


def test_fields_ranges_and_rejections() -> None:
    msg = fv(1, 5) + fl(2, "abc") + varint(3 << 3 | 5) + b"\x01\x00\x00\x00"
    fields = list(iter_fields(msg))
    assert [(f.number, f.wire, f.value) for f in fields] == [(1, 0, 5), (2, 2, 3), (3, 5, 1)]
    assert msg[fields[1].start : fields[1].end] == b"abc"
    with pytest.raises(WireError, match="groups"):
        list(iter_fields(varint(1 << 3 | 3)))
    with pytest.raises(WireError, match="runs past"):
        list(iter_fields(varint(1 << 3 | 2) + varint(100) + b"x"))
    with pytest.raises(WireError, match="field number"):
        list(iter_fields(b"\x00\x01"))


def test_reader_budget_and_depth() -> None:
    msg = fv(1, 1) * 10
    with pytest.raises(TooManyFields):
        list(Reader(msg, max_fields=5).iter(0, len(msg), 0))
    with pytest.raises(WireError, match="nested deeper"):
        list(Reader(msg).iter(0, len(msg), 10_000))


def test_sniffers_accept_real_onnx_and_reject_noise() -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), name="W")
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [w],
    )
    real = onnx.helper.make_model(graph).SerializeToString()
    assert looks_like_onnx(real)
    assert not looks_like_savedmodel(real)
    rng = random.Random(1234)
    for _ in range(500):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        assert not looks_like_onnx(noise)
        assert not looks_like_onnx(b"\x08" + noise[1:])  # even with ONNX's first byte
        assert not looks_like_savedmodel(noise)
    for text in (b"hello world, this is text\n" * 20, b'{"a": 1}', b"key: value\n"):
        assert not looks_like_onnx(text)
        assert not looks_like_savedmodel(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reader_never_raises_anything_but_wire_errors(blob: bytes) -> None:
    try:
        for f in iter_fields(blob):
            assert 0 <= f.start <= f.end <= len(blob)
    except WireError:
        pass
    looks_like_onnx(blob)
    looks_like_savedmodel(blob)
