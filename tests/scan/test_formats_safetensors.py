"""safetensors header and layout defects (t47, one sample per defect) and benign files."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.safetensors_scan import scan_safetensors


def st_file(
    header: dict[str, Any] | str | bytes, data: bytes = b"", *, n: int | None = None
) -> bytes:
    if isinstance(header, dict):
        raw = json.dumps(header).encode()
    elif isinstance(header, str):
        raw = header.encode()
    else:
        raw = header
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def t(dtype: str, shape: list[Any], begin: Any, end: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


GOOD = {"a": t("F32", [2, 2], 0, 16), "b": t("I8", [4], 16, 20)}


def scan(data: bytes, limits: Limits | None = None) -> list[Finding]:
    ctx = ScanContext(limits=limits or Limits())
    assert scan_safetensors(data, Location("model.safetensors"), ctx, 0) == "safetensors"
    return ctx.findings


DEFECTS: dict[str, tuple[Callable[[], bytes], str]] = {
    "header_len_past_eof": (lambda: st_file(GOOD, b"\0" * 20, n=10_000), "past the end"),
    # past the end of the file is a defect even when it is also over the header limit
    "header_len_over_cap": (lambda: st_file(GOOD, b"\0" * 20, n=200_000_000), "past the end"),
    "too_short": (lambda: b"\x01\x00", "too short"),
    "non_utf8": (lambda: st_file(b'{"\xff\xfe": 1}'), "UTF-8"),
    "not_brace": (lambda: st_file(' {"a": ' + json.dumps(GOOD["a"]) + "}", b"\0" * 16), "'{'"),
    "not_object": (lambda: st_file("[1, 2]"), "not an object"),
    "invalid_json": (lambda: st_file('{"a": '), "not valid JSON"),
    "duplicate_name": (
        lambda: st_file(
            '{"a": ' + json.dumps(GOOD["a"]) + ', "a": ' + json.dumps(GOOD["a"]) + "}",
            b"\0" * 16,
        ),
        "more than once",
    ),
    "gap": (
        lambda: st_file({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 12, 20)}, b"\0" * 20),
        "gap",
    ),
    "overlap": (
        lambda: st_file({"a": t("F32", [4], 0, 16), "b": t("F32", [2], 8, 16)}, b"\0" * 16),
        "overlap",
    ),
    "end_before_begin": (lambda: st_file({"a": t("F32", [0], 8, 0)}, b"\0" * 8), "before"),
    "out_of_range": (lambda: st_file({"a": t("F32", [4], 0, 16)}, b"\0" * 8), "past the"),
    "shape_mismatch": (lambda: st_file({"a": t("F32", [3], 0, 16)}, b"\0" * 16), "needs 12"),
    "shape_overflow": (
        lambda: st_file({"a": t("F32", [2**40, 2**40], 0, 16)}, b"\0" * 16),
        "overflows",
    ),
    "negative_dim": (lambda: st_file({"a": t("F32", [-1], 0, 4)}, b"\0" * 4), "non-negative"),
    "trailing_bytes": (lambda: st_file(GOOD, b"\0" * 20 + b"PK\x05\x06" + b"\0" * 18), "trailing"),
    "unknown_dtype": (lambda: st_file({"a": t("F128", [1], 0, 16)}, b"\0" * 16), "unknown dtype"),
    "missing_keys": (lambda: st_file({"a": {"dtype": "F32"}}), "missing"),
    "bad_offsets": (lambda: st_file({"a": t("F32", [1], "0", 4)}, b"\0" * 4), "data_offsets"),
    "metadata_not_str": (
        lambda: st_file({"__metadata__": {"format": 1}, **GOOD}, b"\0" * 20),
        "not a string",
    ),
    "metadata_not_object": (lambda: st_file({"__metadata__": "x", **GOOD}, b"\0" * 20), "object"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_t47_safetensors_defects(defect: str) -> None:
    build, needle = DEFECTS[defect]
    found = [f for f in scan(build()) if f.rule_id == "safetensors.malformed"]
    assert found, defect
    assert all(f.severity == Severity.HIGH for f in found)
    assert any(needle in f.message for f in found), [f.message for f in found]


def test_t47_safetensors_metadata_template_ssti() -> None:
    meta = {"chat_template": "{{ lipsum.__globals__.os.popen('id') }}", "url": "https://x.y"}
    found = scan(st_file({"__metadata__": meta, **GOOD}, b"\0" * 20))
    assert [(f.rule_id, f.severity) for f in found] == [("template.ssti", Severity.CRITICAL)]


def test_t47_safetensors_trailing_polyglot_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    appended = b"\x80\x04\x95 appended pickle"
    ctx = ScanContext()
    nested: list[tuple[bytes, Location]] = []

    def fake_scan_blob(data: bytes, loc: Location, depth: int, *, name: str = "") -> str:
        nested.append((data, loc))
        return "pickle"

    monkeypatch.setattr(ctx, "scan_blob", fake_scan_blob)
    scan_safetensors(st_file(GOOD, b"\0" * 20 + appended), Location("m.safetensors"), ctx, 0)
    assert [(f.rule_id, f.severity) for f in ctx.findings] == [
        ("safetensors.malformed", Severity.HIGH)
    ]
    assert nested == [(appended, Location("m.safetensors", ("<trailing bytes>",)))]


def test_t47_safetensors_header_limit_is_configurable() -> None:
    data = st_file(GOOD, b"\0" * 20)
    assert scan(data) == []
    found = scan(data, Limits(max_header_bytes=10))
    # a header the limit kept from the scan is not verified: at the gate (issue 9 item 8)
    assert [(f.rule_id, f.severity) for f in found] == [("limits.exceeded", Severity.HIGH)]


def test_benign_safetensors_numpy_and_torch() -> None:
    import numpy as np
    import torch
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as torch_save

    arrays = {
        "w": np.ones((3, 5), dtype=np.float16),
        "b": np.zeros((5,), dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "flag": np.array([True, False]),
    }
    assert scan(np_save(arrays, metadata={"format": "np"})) == []
    tensors = {"emb": torch.randn(7, 3, dtype=torch.bfloat16), "ln": torch.ones(3)}
    tensors["f8"] = torch.zeros(4, dtype=torch.float8_e4m3fn)
    assert scan(torch_save(tensors, metadata={"format": "pt"})) == []


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.integers(min_value=0, max_value=200))
def test_safetensors_fuzz_never_raises(body: bytes, n: int) -> None:
    scan(struct.pack("<Q", n) + body)
    good = st_file(GOOD, b"\0" * 20)
    cut = n % len(good)
    scan(good[:cut] + body[:4] + good[cut + 4 :])
