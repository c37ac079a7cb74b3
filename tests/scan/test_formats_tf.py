"""TensorFlow SavedModel / GraphDef / keras_metadata.pb, hand-encoded (t42, benign #10)."""

from __future__ import annotations

import json

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.protobuf_wire import looks_like_savedmodel
from modelcrate.scan.tf_scan import scan_savedmodel
from tests.scan.test_formats_wire import fl, fv


def nodedef(name: str, op: str, *inputs: str, attrs: dict[str, bytes] | None = None) -> bytes:
    """NodeDef: name(1), op(2), input(3), attr(5) map entries key(1)/AttrValue(2)."""
    out = fl(1, name) + fl(2, op) + b"".join(fl(3, i) for i in inputs)
    for key, value in (attrs or {}).items():
        out += fl(5, fl(1, key) + fl(2, value))
    return out


def attr_s(text: str) -> bytes:
    return fl(2, text)  # AttrValue.s


def const_string(name: str, value: str) -> bytes:
    tensor = fv(1, 7) + fl(8, value)  # TensorProto: dtype DT_STRING, string_val(8)
    return nodedef(name, "Const", attrs={"value": fl(8, tensor), "dtype": fv(6, 7)})


def saved_model(nodes: list[bytes], functions: tuple[tuple[str, list[bytes]], ...] = ()) -> bytes:
    """SavedModel: schema version(1), meta_graphs(2) -> graph_def(2) -> node(1), library(2)."""
    graph = b"".join(fl(1, n) for n in nodes)
    if functions:
        lib = b""
        for fname, fnodes in functions:
            lib += fl(1, fl(1, fl(1, fname)) + b"".join(fl(3, n) for n in fnodes))
        graph += fl(2, lib)
    meta = fl(1, fl(4, "serve")) + fl(2, graph)
    return fv(1, 1) + fl(2, meta)


def scan(data: bytes, name: str = "saved_model.pb") -> tuple[str | None, list[Finding]]:
    ctx = ScanContext()
    fmt = scan_savedmodel(data, Location(name), ctx, 0)
    return fmt, ctx.findings


def saver_graph() -> list[bytes]:
    return [
        nodedef("saver_filename", "Placeholder"),
        const_string("tensor_names", "dense/kernel"),
        nodedef("StringJoin", "StringJoin", "saver_filename", "Const_1"),
        nodedef("ShardedFilename", "ShardedFilename", "StringJoin", "num_shards", "shard"),
        nodedef("SaveV2", "SaveV2", "ShardedFilename", "tensor_names", "slices", "^dep"),
        nodedef("MergeV2Checkpoints", "MergeV2Checkpoints", "files", "saver_filename"),
        nodedef("RestoreV2", "RestoreV2", "saver_filename", "tensor_names", "slices"),
        nodedef("print", "PrintV2", "fmt", attrs={"output_stream": attr_s("stderr")}),
        nodedef("table_init", "InitializeTableFromTextFileV2", "table", "asset_path"),
        nodedef("mm", "MatMul", "x", "w"),
    ]


def test_benign_savedmodel_saver_ops() -> None:
    data = saved_model(saver_graph(), (("__inference_restore", saver_graph()),))
    assert looks_like_savedmodel(data)
    fmt, found = scan(data)
    assert fmt == "savedmodel"
    assert found == []


def test_t42_savedmodel_readfile_writefile() -> None:
    nodes = [
        const_string("path", "/etc/passwd"),
        nodedef("read", "ReadFile", "path"),
        nodedef("write", "WriteFile", "out_path", "read"),
    ]
    _, found = scan(saved_model(nodes))
    assert [(f.rule_id, f.severity, f.symbol) for f in found] == [
        ("tf.dangerous-op", Severity.HIGH, "ReadFile"),
        ("tf.dangerous-op", Severity.HIGH, "WriteFile"),
    ]
    assert "/etc/passwd" in found[0].message


def test_t42_savedmodel_function_library_pyfunc_and_file_ops() -> None:
    fnodes = [
        nodedef("f/py", "EagerPyFunc", "x"),
        nodedef("f/glob", "MatchingFiles", "pattern"),
        nodedef("f/print", "PrintV2", "s", attrs={"output_stream": attr_s("file:///tmp/x")}),
        nodedef("f/shell", "ShellCommand", "cmd"),
        nodedef("f/init", "InitializeTableFromTextFileV2", "table", "vocab"),
        const_string("vocab", "../../etc/shadow"),
        nodedef("f/restore", "RestoreV2", "prefix", "names", "slices"),
        const_string("prefix", "/tmp/attacker/ckpt"),
    ]
    _, found = scan(saved_model([nodedef("x", "Placeholder")], (("__inference_call", fnodes),)))
    got = {(f.symbol, f.severity) for f in found}
    assert got == {
        ("EagerPyFunc", Severity.CRITICAL),
        ("ShellCommand", Severity.CRITICAL),
        ("MatchingFiles", Severity.HIGH),
        ("PrintV2", Severity.HIGH),
        ("InitializeTableFromTextFileV2", Severity.HIGH),
        ("RestoreV2", Severity.HIGH),
    }
    assert all(f.rule_id == "tf.dangerous-op" for f in found)
    assert any("__inference_call" in f.message for f in found)


def test_tf_frozen_graphdef_and_malformed() -> None:
    graph = b"".join(fl(1, n) for n in [nodedef("a", "Placeholder"), nodedef("b", "PyFunc", "a")])
    assert looks_like_savedmodel(graph)
    fmt, found = scan(graph, "frozen.pb")
    assert fmt == "tf-graphdef"
    assert [(f.symbol, f.severity) for f in found] == [("PyFunc", Severity.CRITICAL)]
    _, found = scan(saved_model(saver_graph())[:-5])
    assert [f.rule_id for f in found] == ["tf.malformed"]


def test_t36_keras_metadata_pb_lambda() -> None:
    meta = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {"name": "evil", "function": ["YWJj", None, None]},
                }
            ]
        },
    }
    obj = fv(2, 1) + fl(3, "root") + fl(4, "_tf_keras_sequential") + fl(5, json.dumps(meta))
    data = fl(1, obj) + fl(1, fv(2, 2) + fl(3, "root.layer-0") + fl(5, "{}"))
    assert looks_like_savedmodel(data)
    fmt, found = scan(data, "keras_metadata.pb")
    assert fmt == "keras-metadata"
    assert [(f.rule_id, f.severity) for f in found] == [("keras.lambda", Severity.CRITICAL)]
