"""Seed samples, written by the real libraries at run start: benign ones and malicious twins.

Every seed is a :class:`~.structure.Sample` whose tree mirrors the file's layers (compression,
archive, NPY header, the pickle streams inside), with the library's own bytes kept as
``frozen`` so that an unmutated seed is exactly what ``torch.save``, ``joblib.dump``,
``np.save``, ``pandas.to_pickle`` or ``pickle.dumps`` wrote. Where a library stamps the time
(gzip mtime) the stamp is zeroed; pandas' zip and tar are re-rendered (their timestamps
otherwise change every run). Malicious twins get a harmless non-allowlisted call injected at
opcode level into the stream a loader unpickles.
"""

from __future__ import annotations

import ast
import functools
import io
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from typing import Any

from tests.scan.differential import pickleops as po
from tests.scan.differential.structure import Node, Sample, render

OBJ: dict[str, Any] = {
    "name": "model",
    "weights": [0.5, -1.25, 3.0],
    "ids": (1, 300, 70000, 2**40, -5),
    "flags": {"a": True, "b": None},
    "blob": b"\x00\x01\xff",
    "tags": {1, 2, 3},
    "od": OrderedDict(a=1),
    "nested": [[{}], ()],
}


def _pickle_leaf(data: bytes, name: str = "", role: str = "main") -> Node:
    return Node("pickle", data, name, role=role)


def _plain() -> list[Sample]:
    out = []
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(OBJ, protocol=proto)
        out.append(Sample(f"pickle-p{proto}", "model.pkl", _pickle_leaf(data), False))
    import numpy as np

    arr = {"x": np.arange(6, dtype=np.float64).reshape(2, 3), "y": np.array([1, 2], np.int32)}
    for proto in (2, 5):
        data = pickle.dumps(arr, protocol=proto)
        out.append(Sample(f"pickle-numpy-p{proto}", "arrays.pkl", _pickle_leaf(data), False))
    return out


def _torch() -> list[Sample]:
    import torch

    state = {
        "w": torch.arange(4, dtype=torch.float32),
        "b": torch.zeros(2, dtype=torch.int64),
        "meta": {"epoch": 3, "name": "m"},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    zdata = buf.getvalue()
    zf = zipfile.ZipFile(io.BytesIO(zdata))
    members = []
    for info in zf.infolist():
        raw = zf.read(info)
        if info.filename.endswith(".pkl"):
            members.append(_pickle_leaf(raw, info.filename))
        else:
            members.append(Node("raw", raw, info.filename))
    root = Node("zip", opts={"align": 64}, children=members, frozen=zdata)
    out = [Sample("torch-zip", "model.pt", root, False)]

    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    ldata = buf.getvalue()
    parts = po.streams(ldata, limit=5)
    kids = [_pickle_leaf(p, role="main" if i == 3 else "") for i, p in enumerate(parts[:-1])]
    kids.append(Node("raw", parts[-1]))
    out.append(
        Sample("torch-legacy", "model.pt", Node("concat", children=kids, frozen=ldata), False)
    )
    out.append(Sample("torch-legacy-tar", "model.pt", _torch_tar(), False))
    out.append(
        Sample("pickle-torch-p2", "tensor.pkl", _pickle_leaf(pickle.dumps(state["w"], 2)), False)
    )
    return out


class _Persist(pickle.Pickler):
    def persistent_id(self, obj: object) -> str | None:
        return "1" if obj == "<tensor>" else None


def _torch_tar() -> Node:
    """The pre-1.6 tar checkpoint (``storages``, ``tensors``, ``pickle``), as torch's
    ``legacy_load`` reads it; torch cannot write it any more, so it is built here."""
    values = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)
    storages = (
        pickle.dumps(1, 2)
        + b"\x80\x02K\x00X\x03\x00\x00\x00cpuctorch\nFloatStorage\n\x87."
        + struct.pack("<q", 4)
        + values
        + pickle.dumps([], 2)
    )
    tensors = (
        pickle.dumps(1, 2)
        + pickle.dumps((1, 0, None), 2)
        + struct.pack("<ii", 1, 0)
        + struct.pack("<q", 4)
        + struct.pack("<q", 1)
        + struct.pack("<q", 0)
    )
    buf = io.BytesIO()
    _Persist(buf, 2).dump({"w": "<tensor>", "epoch": 3})
    kids = [
        Node("concat", name="storages", children=_split_pickles(storages)),
        Node("concat", name="tensors", children=_split_pickles(tensors)),
        _pickle_leaf(buf.getvalue(), "pickle"),
    ]
    return Node("tar", opts={"format": "pax"}, children=kids)


def _split_pickles(data: bytes) -> list[Node]:
    """Whole pickles as ``pickle`` leaves, binary data between them as ``raw``."""
    out: list[Node] = []
    rest = data
    while rest:
        ol = po.split(rest)
        if ol.complete and ol.ops and ol.ops[0][:1] == po.PROTO:
            n = len(rest) - len(ol.tail)
            out.append(Node("pickle", rest[:n], role=""))
            rest = rest[n:]
            continue
        nxt = rest.find(b"\x80\x02", 1)
        cut = nxt if nxt > 0 else len(rest)
        out.append(Node("raw", rest[:cut]))
        rest = rest[cut:]
    return out


# ---------------------------------------------------------------------------------------------
# joblib


def _joblib_arrays() -> dict[str, Any]:
    import numpy as np

    return {
        "w": np.arange(8, dtype=np.float64) * 1.5 + 0.25,
        "i": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3) + 1000),
        "o": np.array(["a", 1, None, {"k": 2}], dtype=object),
        "meta": {"alpha": 0.5, "classes": [0, 1]},
    }


def _segment_joblib(stream: bytes, numeric: list[bytes]) -> list[Node]:
    """Split joblib's stream into ops, raw array data (with its padding) and nested pickles."""
    raws: list[tuple[int, int]] = []
    start = 0
    for blob in numeric:
        at = stream.find(blob, start)
        if at < 0:
            raise ValueError("array data not found in the joblib stream")
        pad_start = at
        for n in range(0, 17):
            b = at - 1 - n
            if stream[b] == n and stream[b + 1 : at] == b"\xff" * n and stream[b - 1] == ord("b"):
                pad_start = b
                break
        raws.append((pad_start, at + len(blob)))
        start = at + len(blob)
    out: list[Node] = []
    pos = 0
    for a, b in [*raws, (len(stream), len(stream))]:
        out.extend(_ops_segments(stream[pos:a]))
        if b > a:
            out.append(Node("raw", stream[a:b]))
        pos = b
    for i, node in enumerate(out):
        if node.kind == "ops":
            node.role = "main" if i == 0 else ""
    return out


def _ops_segments(data: bytes) -> list[Node]:
    out: list[Node] = []
    rest = data
    first = True
    while rest:
        ol = po.split(rest)
        if not ol.ops:
            out.append(Node("raw", rest))
            break
        nested = [i for i, op in enumerate(ol.ops) if op[:1] == po.PROTO and (i or not first)]
        if nested and ol.complete:
            i = nested[-1]
            head = b"".join(ol.ops[:i])
            if head:
                out.append(Node("ops", head, role="main" if first else ""))
            out.append(Node("pickle", b"".join(ol.ops[i:]), role="nested"))
        else:
            out.append(
                Node(
                    "ops",
                    ol.render() if not ol.complete else b"".join(ol.ops),
                    role="main" if first else "",
                )
            )
            if not ol.complete:
                break
        rest = ol.tail
        first = False
    return out


def _joblib() -> list[Sample]:
    import joblib
    import numpy as np

    obj = _joblib_arrays()
    numeric = [
        np.ascontiguousarray(obj["w"]).tobytes(),
        obj["i"].tobytes("F"),
    ]
    out = []
    for method in ("none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4"):
        buf = io.BytesIO()
        if method == "none":
            joblib.dump(obj, buf)
        else:
            joblib.dump(obj, buf, compress=(method, 3))
        data = buf.getvalue()
        if method == "gzip":
            data = data[:4] + b"\x00\x00\x00\x00" + data[8:]
        stream = _decompress(method, data)
        inner = Node("concat", children=_segment_joblib(stream, numeric))
        if render(inner) != stream:
            raise AssertionError("joblib segmentation does not reproduce the stream")
        if method == "none":
            root = inner
            root.frozen = data
        else:
            root = Node(method, opts={"level": 3}, children=[inner], frozen=data)
        # joblib ignores the name; pandas.read_pickle decompresses by suffix, so a compressed
        # joblib file carries the suffix pandas reads it with (lzma's .xz: LZMAFile reads both)
        suffix = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "lzma": ".xz"}.get(method, "")
        out.append(Sample(f"joblib-{method}", "model.joblib" + suffix, root, False))
    plain = pickle.dumps({"coef": [0.5, 1.5], "n": 3}, protocol=2)
    zf = Node("zf", children=[_pickle_leaf(plain)])
    out.append(Sample("joblib-zf", "model.joblib", zf, False))
    return out


def _decompress(method: str, data: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    if method == "none":
        return data
    if method == "zlib":
        return zlib.decompress(data)
    if method == "gzip":
        return gzip.decompress(data)
    if method == "bz2":
        return bz2.decompress(data)
    if method in ("lzma", "xz"):
        return lzma.decompress(data)
    import lz4.frame

    return bytes(lz4.frame.decompress(data))


# ---------------------------------------------------------------------------------------------
# numpy


def _npy_node(data: bytes, name: str = "") -> Node:
    major, minor = data[6], data[7]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", data, 8)
        start = 10
    else:
        (hlen,) = struct.unpack_from("<I", data, 8)
        start = 12
    header = data[start : start + hlen].decode("latin-1")
    d = ast.literal_eval(header)
    body = data[start + hlen :]
    kind = "pickle" if "O" in str(d["descr"]) else "raw"
    opts = {
        "descr": repr(d["descr"]),
        "fortran": repr(d["fortran_order"]),
        "shape": repr(d["shape"]),
        "version": (major, minor),
    }
    node = Node("npy", name=name, opts=opts, children=[Node(kind, body, role="main")])
    node.frozen = data
    return node


def _numpy() -> list[Sample]:
    import numpy as np

    objarr = np.array(["a", 1, None, {"k": 2}], dtype=object)
    floats = np.arange(5, dtype=np.float64) + 0.5
    out = []
    for sid, arr in (("npy-float", floats), ("npy-object", objarr)):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        out.append(Sample(sid, "array.npy", _npy_node(buf.getvalue()), False))
    for sid, fn in (("npz", np.savez), ("npz-compressed", np.savez_compressed)):
        buf = io.BytesIO()
        fn(buf, w=floats, o=objarr)
        data = buf.getvalue()
        zf = zipfile.ZipFile(io.BytesIO(data))
        kids = []
        for info in zf.infolist():
            npy = _npy_node(zf.read(info), info.filename)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                npy.member["method"] = 8
            kids.append(npy)
        root = Node("zip", children=kids, frozen=data)
        out.append(Sample(sid, "arrays.npz", root, False))
    return out


# ---------------------------------------------------------------------------------------------
# pandas


PANDAS_SUFFIXES = {
    "none": ".pkl",
    "gzip": ".pkl.gz",
    "bz2": ".pkl.bz2",
    "xz": ".pkl.xz",
    "zip": ".pkl.zip",
    "tar": ".pkl.tar",
    "tar.gz": ".tar.gz",
}


def _pandas() -> list[Sample]:
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})
    data = pickle.dumps(df, protocol=5)
    out = []
    for comp, suffix in PANDAS_SUFFIXES.items():
        leaf = _pickle_leaf(data, "frame.pkl")
        if comp == "none":
            root = leaf
        elif comp in ("gzip", "bz2", "xz"):
            root = Node(comp, children=[leaf])
        elif comp == "zip":
            root = Node("zip", children=[leaf])
        elif comp == "tar":
            root = Node("tar", children=[leaf])
        else:
            root = Node("gzip", children=[Node("tar", children=[leaf])])
        out.append(Sample(f"pandas-{comp}", "frame" + suffix, root, False))
    return out


# ---------------------------------------------------------------------------------------------


def main_leaf(sample: Sample) -> tuple[tuple[int, ...], Node]:
    """The pickle (or first ops run) a loader builds its result from."""
    nodes = sample.root.walk()
    for role in ("main", "nested"):
        for path, node in nodes:
            if node.role == role and node.kind in ("pickle", "ops"):
                return path, node
    for path, node in nodes:
        if node.kind in ("pickle", "ops"):
            return path, node
    raise ValueError(f"{sample.seed_id}: no pickle inside")


def inject(sample: Sample, payload: int, form: int, where: str = "start") -> None:
    """Insert a payload call into the main stream, after its PROTO (``start``) or before STOP."""
    path, leaf = main_leaf(sample)
    ol = po.split(leaf.data)
    ops = po.unframe(ol.ops)
    call = po.payload_call(payload, form)
    if where == "start":
        at = po.body_start(ops)
    else:
        at = len(ops) - 1 if ops and ops[-1] == po.STOP else len(ops)
    ops.insert(at, call)
    leaf.data = b"".join(ops) + ol.tail
    sample.root.thaw(path)
    sample.malicious = True


@functools.cache
def build_seeds() -> dict[str, Sample]:
    """Every seed by id; ``X+evil`` is the malicious twin of ``X``."""
    benign = [*_plain(), *_torch(), *_joblib(), *_numpy(), *_pandas()]
    out: dict[str, Sample] = {}
    for i, s in enumerate(benign):
        out[s.seed_id] = s
        if not any(n.kind in ("pickle", "ops") for _, n in s.root.walk()):
            continue
        evil = s.clone()
        evil.seed_id = s.seed_id + "+evil"
        inject(evil, i, i // len(po.PAYLOADS), "start" if i % 3 else "end")
        out[evil.seed_id] = evil
    return out
