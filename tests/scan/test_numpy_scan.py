"""NumPy .npy/.npz (THREATS.md #32 object arrays) and benign numeric arrays."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.scan import Location, Severity
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding
from modelcrate.scan.numpy_scan import scan_npy
from tests.scan.archivegen import EVIL_PICKLE, Member, build_zip, npy_bytes


def run(data: bytes, name: str = "x.npy") -> tuple[str, list[Finding]]:
    ctx = ScanContext()
    return ctx.scan_blob(data, Location(name), 0), ctx.findings


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def test_t32_object_npy() -> None:
    fmt, findings = run(npy_bytes("'|O'", (1,), EVIL_PICKLE))
    assert fmt == "npy-object"
    obj = [f for f in findings if f.rule_id == "numpy.object-array"]
    assert obj
    assert obj[0].severity is Severity.MEDIUM
    assert any(f.severity is Severity.CRITICAL for f in findings)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_t32_object_npy_header_versions(version: int) -> None:
    fmt, findings = run(npy_bytes("'|O'", (2, 2), EVIL_PICKLE, version=version))
    assert fmt == "npy-object"
    assert any(f.severity is Severity.CRITICAL for f in findings)


def test_t32_structured_dtype_with_object_field() -> None:
    descr = "[('a', '<f4'), ('b', [('c', '|O')], (2,))]"
    fmt, findings = run(npy_bytes(descr, (3,), EVIL_PICKLE))
    assert fmt == "npy-object"
    assert any(f.rule_id == "numpy.object-array" for f in findings)


def test_t32_object_npz() -> None:
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, dtype=np.float32))
    data = build_zip(
        [Member("w.npy", buf.getvalue()), Member("meta.npy", npy_bytes("'|O'", (1,), EVIL_PICKLE))]
    )
    fmt, findings = run(data, "weights.npz")
    assert fmt == "npz"
    assert any(
        f.severity is Severity.CRITICAL and f.location.members[0] == "meta.npy" for f in findings
    )


def test_benign_numeric_npy_and_npz() -> None:
    np = pytest.importorskip("numpy")
    arrays = {
        "f": np.arange(12, dtype=np.float32).reshape(3, 4),
        "i": np.arange(5, dtype=np.int64),
        "b": np.array([True, False]),
        "s": np.array(["ab", "c"]),
        "rec": np.zeros(2, dtype=[("x", "<f8"), ("y", "<i2", (3,))]),
        "dt": np.array(["2024-01-01"], dtype="datetime64[ns]"),
        "fortran": np.asfortranarray(np.ones((2, 3))),
    }
    for key, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr)
        fmt, findings = run(buf.getvalue(), f"{key}.npy")
        assert fmt == "npy", key
        assert findings == [], key
    for saver in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        saver(buf, **arrays)
        fmt, findings = run(buf.getvalue(), "weights.npz")
        assert fmt == "npz"
        assert worst(findings) is None or worst(findings) < Severity.HIGH


def test_numeric_npy_size_mismatch() -> None:
    _, findings = run(npy_bytes("'<f4'", (10,), b"\x00" * 8))
    assert any(f.rule_id == "numpy.malformed" and "promises 40" in f.message for f in findings)
    _, findings = run(npy_bytes("'<f4'", (1,), b"\x00" * 4 + EVIL_PICKLE))
    assert any(f.rule_id == "numpy.malformed" and f.severity is Severity.LOW for f in findings)
    assert any(f.severity is Severity.CRITICAL for f in findings)  # trailing bytes are scanned


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': __import__('os').system('id'), 'fortran_order': False, 'shape': ()}",
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': '<f4', 'fortran_order': 0, 'shape': ()}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        "{'descr': 'zz9', 'fortran_order': False, 'shape': ()}",
        "[" * 200 + "]" * 200,
        "not a dict",
    ],
)
def test_malformed_header_is_reported_never_evaluated(header: str) -> None:
    raw = header.encode()
    data = b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw
    _, findings = run(data)
    assert [f.rule_id for f in findings] == ["numpy.malformed"]


def test_truncated_header() -> None:
    _, findings = run(b"\x93NUMPY\x01\x00\xff\xff{}")
    assert [f.rule_id for f in findings] == ["numpy.malformed"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_npy_parser_fuzz_never_raises(tail: bytes) -> None:
    data = b"\x93NUMPY\x01\x00" + len(tail).to_bytes(2, "little") + tail
    ctx = ScanContext()
    scan_npy(data, Location("fuzz.npy"), ctx, 0)
    assert all(f.severity <= Severity.CRITICAL for f in ctx.findings)
