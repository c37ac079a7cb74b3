"""TensorFlow SavedModel / GraphDef protobufs and Keras ``keras_metadata.pb``, without TF.

A SavedModel graph runs its ops when the model is loaded or served. Most ops are maths; the
ones that matter here read or write files, run Python, or write debug/summary streams. The
standard saver ops (SaveV2, RestoreV2, ...) are benign unless a hard-coded path sends them
outside the checkpoint folder.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.keras_scan import check_keras_tree
from modelcrate.scan.protobuf_wire import LEN, VARINT, Field, Reader, TooManyFields, WireError

CODE_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
FILE_OPS = frozenset(
    {
        "ReadFile", "WriteFile", "MatchingFiles", "LoadAndRemapMatrix", "ImmutableConst",
        "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
        "TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2", "LMDBReader", "TFRecordDataset", "TFRecordDatasetV2",
        "TextLineDataset", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
        "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
        "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset",
        "SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader", "RecordInput",
        "CreateSummaryFileWriter", "CreateSummaryDbWriter", "DebugIdentity", "DebugIdentityV2",
        "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
        "Copy", "CopyHost", "FileSystemSetConfiguration",
    }
)  # fmt: skip
SAVER_OPS = frozenset(
    {
        "SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
        "StringJoin", "Save", "SaveSlices", "Restore", "RestoreSlice",
    }
)  # fmt: skip
TABLE_OPS = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})
_STREAMS = frozenset({"stderr", "stdout", "log(info)", "log(warning)", "log(error)"})
_SHELLISH = re.compile(
    r"shell|popen|subprocess|spawn|pyfunc|oscommand|runcommand|systemcall|^(system|exec|eval)$",
    re.I,
)
_PATH_ATTRS = ("memory_region_name", "file_pattern", "debug_urls", "output_stream", "logdir")

_MAX_METADATA = 64 << 20  # keras_metadata.pb JSON read for the Keras config check


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, list[str]]  # string-valued attrs only
    offset: int
    const_strings: list[str] = field(default_factory=list)


@dataclass
class _Walker(Reader):
    graphs: list[tuple[str, list[_Node]]] = field(default_factory=list)
    metadata: list[tuple[int, str]] = field(default_factory=list)

    def saved_model(self) -> None:
        for f in self.iter(0, len(self.data), 0):
            if f.number == 2 and f.wire == LEN:  # meta_graphs
                for g in self.iter(f.start, f.end, 1):
                    if g.number == 2 and g.wire == LEN:  # graph_def
                        self.graph_def(g.start, g.end, 2)

    def graph_def(self, start: int, end: int, depth: int) -> None:
        nodes: list[_Node] = []
        for f in self.iter(start, end, depth):
            if f.wire != LEN:
                continue
            if f.number == 1:
                nodes.append(self.node(f, depth + 1))
            elif f.number == 2:  # FunctionDefLibrary
                for g in self.iter(f.start, f.end, depth + 1):
                    if g.number == 1 and g.wire == LEN:
                        self.function(g, depth + 2)
        self.graphs.append(("graph", nodes))

    def function(self, f: Field, depth: int) -> None:
        name = ""
        nodes: list[_Node] = []
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number == 1:  # signature: OpDef, name(1)
                for h in self.iter(g.start, g.end, depth + 1):
                    if h.number == 1 and h.wire == LEN:
                        name = self.text(h, 512)
            elif g.number == 3:  # node_def
                nodes.append(self.node(g, depth + 1))
        self.graphs.append((f"function {name!r}", nodes))

    def node(self, f: Field, depth: int) -> _Node:
        node = _Node("", "", [], {}, f.offset)
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number == 1:
                node.name = self.text(g, 1024)
            elif g.number == 2:
                node.op = self.text(g, 512)
            elif g.number == 3 and len(node.inputs) < 64:
                node.inputs.append(self.text(g, 1024))
            elif g.number == 5:
                self.attr_entry(g, node, depth + 1)
        return node

    def attr_entry(self, f: Field, node: _Node, depth: int) -> None:
        key = ""
        values: list[str] = []
        for g in self.iter(f.start, f.end, depth):
            if g.number == 1 and g.wire == LEN:
                key = self.text(g, 256)
            elif g.number == 2 and g.wire == LEN:  # AttrValue
                for h in self.iter(g.start, g.end, depth + 1):
                    if h.wire != LEN:
                        continue
                    if h.number == 2:  # s
                        values.append(self.text(h, 4096))
                    elif h.number == 1:  # list: s(2)
                        values += [
                            self.text(i, 4096)
                            for i in self.iter(h.start, h.end, depth + 2)
                            if i.number == 2 and i.wire == LEN
                        ][:16]
                    elif h.number == 8:  # tensor: string_val(8)
                        node.const_strings += [
                            self.text(i, 4096)
                            for i in self.iter(h.start, h.end, depth + 2)
                            if i.number == 8 and i.wire == LEN
                        ][:16]
        if values:
            node.attrs[key] = values

    def keras_metadata(self) -> None:
        for f in self.iter(0, len(self.data), 0):
            if f.number == 1 and f.wire == LEN:
                for g in self.iter(f.start, f.end, 1):
                    if g.number == 5 and g.wire == LEN:
                        self.metadata.append((g.start, self.text(g, _MAX_METADATA)))


def _kind(data: Blob) -> str:
    reader = Reader(data, max_fields=64)
    try:
        for f in reader.iter(0, len(data), 0):
            if f.number == 1 and f.wire == VARINT:
                return "saved_model"
            if f.number == 1 and f.wire == LEN:
                for g in reader.iter(f.start, f.end, 1):
                    if g.number == 5 and g.wire == LEN:
                        return "keras_metadata"
                return "graph_def"
            break
    except (WireError, TooManyFields):
        pass
    return "saved_model"


def scan_savedmodel(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan a ``saved_model.pb``, a frozen GraphDef ``.pb`` or a ``keras_metadata.pb``."""
    walker = _Walker(data)
    kind = _kind(data)
    try:
        if kind == "saved_model":
            walker.saved_model()
        elif kind == "graph_def":
            walker.graph_def(0, len(data), 0)
        else:
            walker.keras_metadata()
    except WireError as exc:
        ctx.add(
            Severity.HIGH,
            "tf.malformed",
            f"TensorFlow protobuf is malformed: {exc}",
            loc.at(exc.offset),
            why="the graph cannot be verified; a tolerant parser may see other content",
        )
    except TooManyFields as exc:
        ctx.limit("tf-fields", f"TensorFlow protobuf has {exc}", loc)
    for where, nodes in walker.graphs:
        _check_graph(where, nodes, loc, ctx)
    for offset, text in walker.metadata:
        if len(text) >= _MAX_METADATA:
            ctx.limit(
                "tf-metadata",
                f"keras_metadata.pb holds metadata longer than {_MAX_METADATA} bytes: it was "
                "not verified",
                loc.at(offset),
            )
            continue
        _check_metadata(text, loc.at(offset), ctx, depth)
    return {"saved_model": "savedmodel", "graph_def": "tf-graphdef"}.get(kind, "keras-metadata")


def _suspicious_path(path: str) -> bool:
    if not path:
        return False
    if path.startswith(("/", "\\", "~")) or "\\" in path or re.match(r"^[A-Za-z][\w+.-]*:", path):
        return True
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../")


def _check_graph(where: str, nodes: list[_Node], loc: Location, ctx: ScanContext) -> None:
    consts = {n.name: n.const_strings for n in nodes if n.op == "Const" and n.const_strings}

    def operand_paths(node: _Node) -> list[str]:
        out: list[str] = []
        for inp in node.inputs:
            if inp.startswith("^"):
                continue
            out += consts.get(inp.split(":", 1)[0], [])
        for key in _PATH_ATTRS:
            out += node.attrs.get(key, [])
        return out

    for node in nodes:
        op = node.op
        at = loc.at(node.offset)
        paths = operand_paths(node)
        shown = f" (paths: {', '.join(repr(p) for p in paths[:3])})" if paths else ""
        label = f"op {op} (node {node.name!r} in {where})"
        if op in CODE_OPS or (op not in FILE_OPS and _SHELLISH.search(op) and _custom(op)):
            ctx.add(
                Severity.CRITICAL,
                "tf.dangerous-op",
                f"{label} runs Python or system code",
                at,
                why="PyFunc-style ops call back into the Python process that loads the model; "
                "the callable comes from outside the graph",
                symbol=op,
            )
        elif op in FILE_OPS:
            ctx.add(
                Severity.HIGH,
                "tf.dangerous-op",
                f"{label} reads or writes files{shown}",
                at,
                why="a served model can read local files, exfiltrate them through outputs, or "
                "overwrite files",
                symbol=op,
            )
        elif op == "PrintV2":
            streams = node.attrs.get("output_stream", [])
            bad = [s for s in streams if s not in _STREAMS]
            if bad:
                ctx.add(
                    Severity.HIGH,
                    "tf.dangerous-op",
                    f"{label} prints to {bad[0]!r}",
                    at,
                    why="PrintV2 with a file output stream appends to an arbitrary file",
                    symbol=op,
                )
        elif op in SAVER_OPS or op in TABLE_OPS:
            bad = [p for p in paths if _suspicious_path(p)]
            if bad:
                ctx.add(
                    Severity.HIGH,
                    "tf.dangerous-op",
                    f"{label} uses a hard-coded path outside the model folder: {bad[0]!r}",
                    at,
                    why="standard saver and vocabulary ops take paths relative to the SavedModel; "
                    "a fixed absolute or '..' path reads or writes elsewhere",
                    symbol=op,
                )


def _custom(op: str) -> bool:
    """Op names that look shell-like but are standard TF ops are excluded."""
    return op not in {"TPUExecute", "TPUExecuteAndUpdateVariables", "_TPUExecute", "Exit"}


def _check_metadata(text: str, loc: Location, ctx: ScanContext, depth: int) -> None:
    try:
        obj = json.loads(text)
    except ValueError:
        ctx.add(
            Severity.MEDIUM,
            "tf.malformed",
            "keras_metadata.pb holds metadata that is not valid JSON",
            loc,
            why="Keras parses this JSON when loading the SavedModel; it could not be verified",
        )
        return
    check_keras_tree(obj, loc, ctx, depth)
