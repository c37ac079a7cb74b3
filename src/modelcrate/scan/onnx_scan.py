"""ONNX models, read from the protobuf bytes without the ``onnx`` package.

What can hurt a loader is outside the graph maths: external-data ``location`` strings that
escape the model folder (CVE-2022-25882, CVE-2024-27318, CVE-2025-51480) and operators from
custom domains, which need a library the model does not carry. External data is never read.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.protobuf_wire import LEN, VARINT, Field, Reader, TooManyFields, WireError

STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
)
_DRIVE = re.compile(r"^[A-Za-z]:")

# Field numbers from onnx/onnx.proto3.
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_OP, _NODE_ATTR, _NODE_DOMAIN, _NODE_NAME = 4, 5, 7, 3
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_FUNC_NAME, _FUNC_NODE, _FUNC_DOMAIN = 1, 7, 10


_MAX_VALUE = 64 << 10  # an external-data entry (a path) read for the checks


@dataclass
class _External:
    tensor: str
    offset: int
    entries: dict[str, str]
    external: bool


@dataclass
class _Walker(Reader):
    domains: dict[str, set[str]] = field(default_factory=dict)
    functions: set[tuple[str, str]] = field(default_factory=set)
    externals: list[_External] = field(default_factory=list)
    too_long: int = 0  # external-data values longer than _MAX_VALUE (not verified)

    def model(self) -> None:
        for f in self.iter(0, len(self.data), 0):
            if f.wire != LEN:
                continue
            if f.number == _MODEL_GRAPH:
                self.graph(f, 1)
            elif f.number == _MODEL_FUNCTIONS:
                self.function(f, 1)
            elif f.number == _MODEL_TRAINING:  # TrainingInfoProto: initialization(1), algorithm(2)
                for g in self.iter(f.start, f.end, 1):
                    if g.number in (1, 2) and g.wire == LEN:
                        self.graph(g, 2)

    def graph(self, f: Field, depth: int) -> None:
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number == _GRAPH_NODE:
                self.node(g, depth + 1)
            elif g.number == _GRAPH_INIT:
                self.tensor(g, depth + 1)
            elif g.number == _GRAPH_SPARSE_INIT:
                self.sparse(g, depth + 1)

    def function(self, f: Field, depth: int) -> None:
        name = domain = ""
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number == _FUNC_NODE:
                self.node(g, depth + 1)
            elif g.number == _FUNC_NAME:
                name = self.text(g)
            elif g.number == _FUNC_DOMAIN:
                domain = self.text(g)
        self.functions.add((domain, name))

    def node(self, f: Field, depth: int) -> None:
        op = domain = ""
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number == _NODE_OP:
                op = self.text(g, 256)
            elif g.number == _NODE_DOMAIN:
                domain = self.text(g, 256)
            elif g.number == _NODE_ATTR:
                self.attribute(g, depth + 1)
        ops = self.domains.setdefault(domain, set())
        if len(ops) < 64:
            ops.add(op)

    def attribute(self, f: Field, depth: int) -> None:
        for g in self.iter(f.start, f.end, depth):
            if g.wire != LEN:
                continue
            if g.number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(g, depth + 1)
            elif g.number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(g, depth + 1)
            elif g.number in (_ATTR_SPARSE, _ATTR_SPARSES):
                self.sparse(g, depth + 1)

    def sparse(self, f: Field, depth: int) -> None:
        for g in self.iter(f.start, f.end, depth):
            if g.number in (1, 2) and g.wire == LEN:  # values, indices
                self.tensor(g, depth + 1)

    def tensor(self, f: Field, depth: int) -> None:
        name = ""
        external = False
        entries: dict[str, str] = {}
        for g in self.iter(f.start, f.end, depth):
            if g.number == _TENSOR_NAME and g.wire == LEN:
                name = self.text(g, 1024)
            elif g.number == _TENSOR_LOCATION and g.wire == VARINT:
                external = g.value == 1
            elif g.number == _TENSOR_EXTERNAL and g.wire == LEN:
                key = value = ""
                for h in self.iter(g.start, g.end, depth + 1):
                    if h.wire == LEN and h.number == 1:
                        key = self.text(h, 1024)
                    elif h.wire == LEN and h.number == 2:
                        value = self.text(h, _MAX_VALUE)
                        if h.end - h.start > _MAX_VALUE:
                            self.too_long += 1
                entries[key] = value
        if external or entries:
            self.externals.append(_External(name, f.offset, entries, external))


def scan_onnx(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan an ONNX ModelProto: external-data paths, custom operator domains, structure."""
    walker = _Walker(data)
    try:
        walker.model()
    except WireError as exc:
        ctx.add(
            Severity.HIGH,
            "onnx.malformed",
            f"ONNX protobuf is malformed: {exc}",
            loc.at(exc.offset),
            why="the model cannot be verified; a parser that tolerates it may see other content",
        )
    except TooManyFields as exc:
        ctx.limit("onnx-fields", f"ONNX model has {exc}", loc)
    if walker.too_long:
        ctx.limit(
            "onnx-text",
            f"{walker.too_long} external-data entries are longer than {_MAX_VALUE} bytes: "
            "their paths were not verified",
            loc,
        )
    for ext in walker.externals:
        _check_external(ext, loc, ctx)
    _report_domains(walker, loc, ctx)
    return "onnx"


def path_problem(location: str) -> str | None:
    """Why an external-data ``location`` escapes the model folder, or None when it stays in."""
    if not location:
        return "is empty"
    if "\x00" in location:
        return "contains a NUL byte"
    if "\\" in location:
        return "uses backslashes, which Windows treats as separators"
    if location.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(location):
        return "names a drive"
    if ":" in location.split("/", 1)[0] or location.startswith("~"):
        return "is a URL or a home-relative path"
    norm = posixpath.normpath(location)
    if norm == ".." or norm.startswith("../"):
        return "leaves the model directory after normalisation"
    if norm in (".", ""):
        return "names the model directory itself"
    return None


def _check_external(ext: _External, loc: Location, ctx: ScanContext) -> None:
    where = loc.at(ext.offset)
    location = ext.entries.get("location")
    label = f"tensor {ext.tensor!r}" if ext.tensor else "a tensor"
    if location is None:
        if ext.external:
            ctx.add(
                Severity.HIGH,
                "onnx.malformed",
                f"{label} has data_location=EXTERNAL but no 'location' entry",
                where,
                why="the loader cannot resolve it; the model is inconsistent",
            )
        return
    problem = path_problem(location)
    if problem is not None:
        ctx.add(
            Severity.HIGH,
            "onnx.external-data",
            f"external data of {label} points to {location!r}, which {problem}",
            where,
            why="onnx.load reads (and onnx.save writes) this path: a file outside the model "
            "folder can be read or overwritten (CVE-2022-25882, CVE-2024-27318, CVE-2025-51480)",
            symbol=location,
        )
        return
    for key in ("offset", "length"):
        raw = ext.entries.get(key)
        if raw is not None and not raw.isdigit():
            ctx.add(
                Severity.MEDIUM,
                "onnx.external-data",
                f"external data of {label} has a non-numeric {key} {raw[:40]!r}",
                where,
                why="a loader may misread the range of the external file",
            )
    if loc.members:
        return  # inside an archive: nothing on disk to resolve
    base = Path(loc.path).parent
    target = base / location
    real_base = os.path.realpath(base)
    real = os.path.realpath(target)
    if os.path.commonpath([real_base, real]) != real_base:
        ctx.add(
            Severity.HIGH,
            "onnx.external-data",
            f"external data of {label} at {location!r} resolves through a link to {real}, "
            "outside the model folder",
            where,
            why="onnx.load follows the link and reads a file the model should not reach",
            symbol=location,
        )


def _report_domains(walker: _Walker, loc: Location, ctx: ScanContext) -> None:
    for domain in sorted(walker.domains):
        if domain in STANDARD_DOMAINS:
            continue
        ops = sorted(op for op in walker.domains[domain] if (domain, op) not in walker.functions)
        if not ops:
            continue  # every op is a function defined inside the model
        shown = ", ".join(ops[:8]) + (", ..." if len(ops) > 8 else "")
        ctx.add(
            Severity.MEDIUM,
            "onnx.custom-domain",
            f"nodes in custom operator domain {domain!r} (ops: {shown})",
            loc,
            why="custom operators run code from a library outside the model; check where "
            "the runtime loads it from",
            symbol=domain,
        )
