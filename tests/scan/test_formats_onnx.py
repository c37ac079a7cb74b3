"""ONNX: external-data path escapes (t43 a-d), custom domains (t44), structure, benign models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.onnx_scan import path_problem, scan_onnx
from tests.scan.test_formats_wire import fl, fv, onnx_model


def external_tensor(location: str, name: str = "W", **extra: str) -> bytes:
    """TensorProto: dims(1), data_type(2)=FLOAT, name(8), external_data(13), data_location(14)."""
    entries = fl(13, fl(1, "location") + fl(2, location))
    for key, value in extra.items():
        entries += fl(13, fl(1, key) + fl(2, value))
    return fv(1, 4) + fv(2, 1) + fl(8, name) + entries + fv(14, 1)


def node(op: str, domain: str = "", attrs: bytes = b"") -> bytes:
    """NodeProto: input(1), output(2), op_type(4), attribute(5), domain(7)."""
    return fl(1, "x") + fl(2, "y") + fl(4, op) + (fl(5, attrs) if attrs else b"") + fl(7, domain)


def gnode(op: str, domain: str = "", attrs: bytes = b"") -> bytes:
    """A node as a GraphProto field (node = 1)."""
    return fl(1, node(op, domain, attrs))


def graph(*parts: bytes) -> bytes:
    """GraphProto: name(2) and the given fields (gnode(...), fl(5, tensor) initializers)."""
    return fl(2, "g") + b"".join(parts)


def scan(data: bytes, path: str = "model.onnx") -> list[Finding]:
    ctx = ScanContext()
    assert scan_onnx(data, Location(path), ctx, 0) == "onnx"
    return ctx.findings


def high(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity >= Severity.HIGH]


@pytest.mark.parametrize(
    "location",
    [
        "../../etc/passwd",  # (a) CVE-2022-25882
        "subdir/../../etc/passwd",  # (b) beats the lstrip fix, CVE-2024-27318
        "/etc/passwd",  # (c) absolute
        "..\\..\\windows\\win.ini",
        "C:/Windows/win.ini",
        "file:///etc/passwd",
        "./a/../../x",
    ],
)
def test_t43_onnx_external_data_traversal(location: str) -> None:
    data = onnx_model(graph(gnode("Identity"), fl(5, external_tensor(location))))
    found = high(scan(data))
    assert [f.rule_id for f in found] == ["onnx.external-data"]
    assert found[0].symbol == location
    # cross-check: the real onnx parser sees the same location (parsing only, nothing loaded)
    import onnx

    model = onnx.load_model_from_string(data)
    assert model.graph.initializer[0].external_data[0].value == location


def test_t43_onnx_external_data_in_subgraph_and_function() -> None:
    sub = graph(fl(5, external_tensor("../secret")))
    if_node = gnode("If", attrs=fl(1, "then_branch") + fl(6, sub) + fv(20, 5))
    func = fl(1, "f") + fl(7, node("Constant", attrs=fl(1, "value") + fl(5, external_tensor("/x"))))
    func += fl(10, "local")
    data = onnx_model(graph(if_node)) + fl(25, func)
    assert sorted(f.symbol or "" for f in high(scan(data))) == ["../secret", "/x"]


def test_t43_onnx_external_data_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 16)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.symlink(outside, model_dir / "weights.bin")  # (d) a link inside the folder points out
    (model_dir / "ok.bin").write_bytes(b"\0" * 16)
    data = onnx_model(
        graph(fl(5, external_tensor("weights.bin")), fl(5, external_tensor("ok.bin", "V")))
    )
    path = model_dir / "model.onnx"
    found = high(scan(data, str(path)))
    assert len(found) == 1
    assert "through a link" in found[0].message
    # inside an archive there is nothing on disk to resolve: the name alone is fine
    ctx = ScanContext()
    scan_onnx(data, Location("a.zip").child("model.onnx"), ctx, 1)
    assert not high(ctx.findings)


def test_t43_onnx_external_data_odd_offset() -> None:
    data = onnx_model(graph(fl(5, external_tensor("w.bin", offset="-5"))))
    found = scan(data)
    assert [(f.rule_id, f.severity) for f in found] == [("onnx.external-data", Severity.MEDIUM)]


def test_path_problem_accepts_plain_relative_names() -> None:
    for ok in ("model.onnx_data", "weights/layer0.bin", "a/../b.bin", "sub dir/x.bin"):
        assert path_problem(ok) is None, ok


def test_t44_onnx_custom_domain() -> None:
    data = onnx_model(
        graph(gnode("PyOp", "ai.onnx.contrib"), gnode("Relu"), gnode("ZipMap", "ai.onnx.ml")),
        opsets=(("", 17), ("ai.onnx.contrib", 1), ("ai.onnx.ml", 3)),
    )
    found = scan(data)
    assert [(f.rule_id, f.severity, f.symbol) for f in found] == [
        ("onnx.custom-domain", Severity.MEDIUM, "ai.onnx.contrib")
    ]
    assert "PyOp" in found[0].message


def test_onnx_model_local_function_domain_is_not_custom() -> None:
    func = fl(1, "MyBlock") + fl(7, node("Relu")) + fl(10, "my.local")
    data = onnx_model(graph(gnode("MyBlock", "my.local"))) + fl(25, func)
    assert scan(data) == []


def test_onnx_malformed() -> None:
    data = onnx_model(graph(gnode("Relu")))
    found = scan(data[:-3])
    assert [f.rule_id for f in found] == ["onnx.malformed"]
    assert found[0].severity == Severity.HIGH
    assert [f.rule_id for f in scan(b"\x08\x08\x3a\xff\xff\xff\xff\x0f")] == ["onnx.malformed"]
    deep = fl(1, b"")
    for _ in range(80):  # If -> then_branch -> If -> ... deeper than the cap
        deep = graph(gnode("If", attrs=fl(1, "b") + fl(6, deep)))
    assert "nested deeper" in scan(onnx_model(deep))[0].message


def test_benign_skl2onnx_logistic_regression() -> None:
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    clf = LogisticRegression().fit(x, [0, 1, 1, 0])
    data = to_onnx(clf, x[:1]).SerializeToString()
    assert scan(data) == []  # ai.onnx.ml + ZipMap are standard


def test_benign_onnx_external_data_same_folder(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), name="W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(
        helper.make_model(g),
        str(path),
        save_as_external_data=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    assert (tmp_path / "model.onnx_data").exists()
    assert scan(path.read_bytes(), str(path)) == []
