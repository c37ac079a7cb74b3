"""The symbolic Pickle Machine: opcode coverage, loader semantics, limits, benign files."""

from __future__ import annotations

import collections
import datetime
import io
import os
import pickle
import pickletools
import time

import pytest

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_scan import looks_like_pickle, scan_pickle
from modelcrate.scan.pickle_vm import _DISPATCH, Global, Machine, Mode, Opaque, Sink
from modelcrate.scan.policy import Policy
from tests.scan.picklegen import P, binbytes, call, frame, get, glob, lit, put, rules, scan_bytes

HIGH = Severity.HIGH

PLAIN = {
    "ints": [0, 1, -1, 255, 256, 65_535, 2**31, -(2**31) - 1, 2**100],
    "floats": [0.5, -1e300, float("inf")],
    "text": ["", "a", "é" * 300, "x\ny"],
    "bytes": [b"", b"\x00\xff", b"z" * 300],
    "nested": ({"k": (1, [2, {3}])}, frozenset({4})),
    "flags": [True, False, None],
    "shared": [[1, 2]] * 3,
}


def _run(data: bytes, mode: Mode = Mode.LINEAR, limits: Limits | None = None) -> Machine:
    sink = Sink(limits or Limits(), Policy(), {})
    return Machine(data, 0, sink, mode=mode).run()


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_benign_plain_data_all_protocols(proto: int) -> None:
    data = pickle.dumps(PLAIN, protocol=proto)
    findings = scan_bytes(data)
    assert [f for f in findings if f.severity >= HIGH] == []
    machine = _run(data)
    assert machine.stopped
    assert machine.error is None
    assert machine.pos == len(data)


def test_every_pickletools_opcode_is_dispatched() -> None:
    bad = _DISPATCH[0xFF]
    missing = [
        op.name for op in pickletools.opcodes if _DISPATCH[op.code.encode("latin-1")[0]] is bad
    ]
    assert missing == []


def test_values_are_tracked_symbolically() -> None:
    data = P.PROTO2 + call(glob("collections", "OrderedDict"), lit([("a", 1)])) + P.STOP
    machine = _run(data)
    value = machine.value
    assert type(value).__name__ == "Call"
    assert value.callee == Global("collections", "OrderedDict", 2)  # type: ignore[attr-defined]
    assert value.args == ([("a", 1)],)  # type: ignore[attr-defined]


def test_py2_names_are_normalized() -> None:
    findings = scan_bytes(P.PROTO2 + glob("__builtin__", "set") + P.STOP)
    assert {f.symbol for f in findings} == {"builtins.set"}


def test_duplicate_globals_are_counted_once_per_stream() -> None:
    ref = glob("collections", "OrderedDict")
    data = P.PROTO2 + P.MARK + ref + ref + ref + P.TUPLE + P.STOP
    findings = [f for f in scan_bytes(data) if f.rule_id == "pickle.global"]
    assert len(findings) == 1
    assert "3 references" in findings[0].message
    assert findings[0].location.offset == 3


def test_calling_a_computed_value_is_high() -> None:
    inner = call(glob("collections", "OrderedDict"))
    findings = scan_bytes(P.PROTO2 + call(inner) + P.STOP)
    assert "pickle.call" in rules(findings, HIGH)


def test_cfile_reading_matches_cpython() -> None:
    # Harmless strings only: pins the CPython behaviour the machine models.
    body = lit("one") + put(1) + P.POP + lit("eleven") + put(11) + P.POP
    data = P.PROTO4 + frame(len(body)) + body + frame(2) + b"g1" + b"1\n" + P.STOP
    assert pickle.loads(data) == "eleven"
    assert pickle.load(io.BytesIO(data)) == "one"
    assert _run(data, Mode.LINEAR).value == "eleven"
    assert _run(data, Mode.CFILE).value == "one"


def test_frame_longer_than_data_is_a_violation() -> None:
    data = P.PROTO4 + frame(1000) + lit("x") + P.STOP
    findings = scan_bytes(data)
    assert "pickle.frame-violation" in rules(findings, HIGH)


def test_persistent_ids() -> None:
    storage = lit(("storage", None, "0", "cpu", 4))
    ok = P.PROTO2 + storage[:0] + glob("torch", "FloatStorage") + P.POP
    ok += storage + b"Q" + P.STOP
    assert "pickle.persistent-id" not in rules(scan_bytes(ok))
    odd = P.PROTO2 + lit(("shell", "rm")) + b"Q" + P.STOP
    assert "pickle.persistent-id" in rules(scan_bytes(odd), Severity.MEDIUM)
    assert isinstance(_run(odd).value, Opaque)


def test_extension_codes_and_out_of_band_buffers() -> None:
    ext = P.PROTO2 + b"\x82\x01" + P.EMPTY_TUPLE + P.REDUCE + P.STOP
    assert {"pickle.extension", "pickle.call"} <= rules(scan_bytes(ext), HIGH)
    oob = P.PROTO5 + P.NEXT_BUFFER + P.READONLY_BUFFER + P.STOP
    assert "pickle.out-of-band-buffer" in rules(scan_bytes(oob), HIGH)


def test_mutating_a_module_level_object_is_critical() -> None:
    data = P.PROTO2 + glob("copyreg", "_extension_registry") + lit("k") + lit(1) + P.SETITEM
    findings = scan_bytes(data + P.STOP)
    assert "pickle.attribute-injection" in rules(findings, Severity.CRITICAL)


@pytest.mark.parametrize(
    ("data", "limits", "name"),
    [
        (P.PROTO2 + P.NONE * 100 + P.STOP, Limits(max_pickle_ops=50), "pickle-ops"),
        (P.PROTO2 + P.NONE * 100 + P.STOP, Limits(max_stack_depth=50), "stack-depth"),
        (P.PROTO2 + P.MARK * 100 + P.STOP, Limits(max_stack_depth=50), "stack-depth"),
        (P.PROTO4 + P.NONE + P.MEMOIZE * 100 + P.STOP, Limits(max_memo_entries=50), "memo"),
    ],
)
def test_limits_stop_the_machine(data: bytes, limits: Limits, name: str) -> None:
    machine = _run(data, limits=limits)
    assert machine.error is not None
    assert not machine.stopped
    assert machine.sink.limit_hits[0][0] == name
    ctx = ScanContext(limits=limits)
    scan_pickle(data, Location("x.pkl"), ctx, 0)
    assert "limits.exceeded" in rules(ctx.findings, HIGH)


def test_large_literals_are_not_copied() -> None:
    blob = b"\x00" * 300_000
    machine = _run(P.PROTO4 + binbytes(blob) + P.STOP)
    assert isinstance(machine.value, Opaque)
    assert machine.value.kind == "blob"


def test_legacy_torch_checkpoint_is_benign() -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    model = torch.nn.Linear(3, 2)
    torch.save(model.state_dict(), buf, _use_new_zipfile_serialization=False)
    ctx = ScanContext()
    fmt = scan_pickle(buf.getvalue(), Location("model.pt"), ctx, 0)
    assert fmt == "pytorch-legacy"
    assert [f for f in ctx.findings if f.severity >= HIGH] == []


def test_legacy_torch_full_module_resolves_module_persistent_ids() -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(2, 2)), buf, _use_new_zipfile_serialization=False
    )
    ctx = ScanContext()
    assert scan_pickle(buf.getvalue(), Location("model.pt"), ctx, 0) == "pytorch-legacy"
    assert "pickle.call" not in rules(ctx.findings)
    assert "pickle.persistent-id" not in rules(ctx.findings)


def test_joblib_arrays_are_skipped_exactly() -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    value = {
        "f": np.arange(7, dtype="f4"),
        "u": np.array(["ab", "cde"]),
        "s": np.zeros((2, 3), dtype=[("a", "i4"), ("b", "f8")]),
        "o": np.array([1, "x", None], dtype=object),
        "empty": np.zeros((0,), dtype="i8"),
        "tail": {"after": [1, 2]},
    }
    joblib.dump(value, buf)
    ctx = ScanContext()
    assert scan_pickle(buf.getvalue(), Location("m.joblib"), ctx, 0) == "joblib"
    assert [f for f in ctx.findings if f.severity >= HIGH] == []


def test_benign_sklearn_and_stdlib_values() -> None:
    np = pytest.importorskip("numpy")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    meta = {"when": datetime.datetime(2024, 1, 1), "od": collections.OrderedDict(a=np.float64(1))}
    for proto in (2, 4, 5):
        for value in (model, meta):
            findings = scan_bytes(pickle.dumps(value, protocol=proto))
            assert [f.message for f in findings if f.severity >= HIGH] == []


@pytest.mark.parametrize("proto", [0, 1])
def test_looks_like_pickle_accepts_text_protocols(proto: int) -> None:
    assert looks_like_pickle(pickle.dumps(PLAIN, protocol=proto))
    assert looks_like_pickle(glob("os", "system") + b"\xff garbage")


@pytest.mark.parametrize(
    "text",
    [
        b"tree\nversion=v4\nnum_class=1\n",
        b'{"a": [1, 2, 3]}',
        b"a,b,c\n1,2,3\n",
        b"Index,Value\n0,1\n",
        b"# comment\nkey: value\n",
        b"Version 1.0\nNotes\nmore text here\n",
        b"hello world",
        b"",
    ],
)
def test_looks_like_pickle_rejects_text(text: bytes) -> None:
    assert not looks_like_pickle(text)


def test_looks_like_pickle_is_cheap() -> None:
    blobs = [os.urandom(1 << 20), b"(" * 100_000, b"V" + b"a" * 1_000_000, b"I1\n" * 100_000]
    for blob in blobs:
        start = time.perf_counter()
        for _ in range(10):
            looks_like_pickle(blob)
        assert (time.perf_counter() - start) / 10 < 0.005


def test_large_state_dict_pickle_is_fast() -> None:
    entries = [
        glob("torch._utils", "_rebuild_tensor_v2")
        + P.MARK
        + lit(("storage", None, str(i), "cpu", 16))[:-1]
        + P.TUPLE
        + b"Q"
        + lit(0)
        + lit((4, 4))
        + lit((4, 1))
        + lit(False)
        + call(glob("collections", "OrderedDict"))
        + P.TUPLE
        + P.REDUCE
        for i in range(1_000)
    ]
    body = P.PROTO2 + P.EMPTY_DICT + P.MARK
    body += b"".join(lit(f"layer{i}.weight") + e for i, e in enumerate(entries)) + P.SETITEMS
    body += P.STOP
    start = time.perf_counter()
    machine = _run(body)
    elapsed = time.perf_counter() - start
    assert machine.stopped
    assert machine.error is None
    assert elapsed < 1.0


def test_helpers_build_valid_streams() -> None:
    assert pickle.loads(P.PROTO2 + lit({"a": (1, [b"x"])}) + P.STOP) == {"a": (1, [b"x"])}
    assert pickle.loads(P.PROTO2 + lit("v") + put(3) + P.POP + get(3) + P.STOP) == "v"
