"""The Open Inference Protocol V2 (KServe / Triton) REST API, JSON tensors.

The V2 model name is the crate's name; its one version is the crate version (clients may also
use the bare hex digest or a prefix of it). A purely numeric model (``signature.tensor_input``)
takes one ``[rows, features]`` tensor, as ONNX graphs and KServe expect, and also accepts one
tensor per column; any other model takes one tensor per column, ``BYTES`` for strings. Tensor
``data`` is row-major, flat or nested, or raw bytes after the JSON header with the binary tensor
data extension (``v2_binary``); outputs are answered in binary where requested. Outputs are
``label`` (BYTES) and ``probabilities`` (FP32 ``[rows, classes]``) for classifiers,
``prediction`` for regressors. Every error answers ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelcrate import __version__
from modelcrate.crate.signature import V2_DATATYPE
from modelcrate.serve.codec import FLOAT32_MAX, JSON_OPTIONS, NUMPY_DTYPE, checked_output
from modelcrate.serve.v2_binary import BinaryFormatError, binary_chunks, decode, encode, split_body
from modelcrate.serve.validation import TooManyRecords, shown

if TYPE_CHECKING:
    from collections.abc import Mapping

    from modelcrate.serve.model import ModelInfo

SERVER_NAME = "modelcrate"
EXTENSIONS: list[str] = ["binary_tensor_data"]  # see v2_binary.py


class V2Error(Exception):
    """A protocol error: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # V2 datatype, e.g. "FP32"
    dtype: str  # signature dtype, e.g. "float32"
    width: int | None  # features per row for a 2-D tensor; None for a column tensor [rows]
    float32: bool = False  # its values end up float32 (the largest magnitude is FLOAT32_MAX)

    def metadata(self) -> dict[str, Any]:
        shape = [-1] if self.width is None else [-1, self.width]
        return {"name": self.name, "datatype": self.datatype, "shape": shape}


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    rows: int
    outputs: tuple[str, ...]
    id: str | None
    binary_outputs: frozenset[str] = frozenset()  # outputs to answer as raw bytes


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


class V2Codec:
    """Parses infer requests into predictor inputs and writes infer responses, for one model."""

    def __init__(self, info: ModelInfo, max_rows: int = 0) -> None:
        sig = info.signature
        self.info = info
        self.max_rows = max_rows  # rows per request; 0: no limit
        # a float64 column of a model that takes a float32 tensor holds float32 values too
        to_float32 = sig.tensor_input and sig.tensor_dtype == "float32"
        self.columns = tuple(
            TensorSpec(
                c.name,
                V2_DATATYPE[c.dtype],
                c.dtype,
                None,
                c.dtype == "float32" or (to_float32 and c.dtype == "float64"),
            )
            for c in sig.inputs
        )
        self.tensor = (
            TensorSpec(
                sig.tensor_name,
                V2_DATATYPE[sig.tensor_dtype],
                sig.tensor_dtype,
                len(sig.inputs),
                sig.tensor_dtype == "float32",
            )
            if sig.tensor_input
            else None
        )
        self.output_names = tuple(o.name for o in sig.outputs)
        self._outputs = {o.name: o for o in sig.outputs}
        declared = (self.tensor,) if self.tensor is not None else self.columns
        self.metadata: dict[str, Any] = {
            "name": info.name,
            "versions": [info.version],
            "platform": info.platform,
            "inputs": [t.metadata() for t in declared],
            "outputs": [
                {
                    "name": o.name,
                    "datatype": V2_DATATYPE[o.dtype],
                    "shape": [-1, *o.shape],
                }
                for o in sig.outputs
            ],
        }

    # -- model and version lookup ----------------------------------------------------------

    def check_model(self, name: str, version: str | None) -> None:
        info = self.info
        if name != info.name:
            raise V2Error(
                404, f"model {name!r} is not served here; this server serves {info.name!r}"
            )
        if version is not None and not info.matches_version(version):
            raise V2Error(
                404,
                f"model {name!r} has no version {version!r}; "
                f"this server serves version {info.version!r}",
            )

    # -- requests --------------------------------------------------------------------------

    def parse_request(self, body: bytes, header_length: str | None = None) -> InferRequest:
        """Parse an infer request; ``header_length`` is the ``Inference-Header-Content-Length``
        header of a binary request (None for plain JSON)."""
        blob: memoryview | None = None
        header: bytes | memoryview = body
        if header_length is not None:
            try:
                header, blob = split_body(body, header_length)
            except BinaryFormatError as exc:
                raise V2Error(400, str(exc)) from None
        try:
            doc = orjson.loads(header)
        except orjson.JSONDecodeError as exc:
            raise V2Error(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise V2Error(400, "the request body must be a JSON object with an 'inputs' list")
        raw = doc.get("inputs")
        if not isinstance(raw, list) or not raw:
            raise V2Error(400, "'inputs' must be a non-empty list of tensors")
        most = max(len(self.columns), 1)  # one tensor per column at most
        tensors: dict[str, dict[str, Any]] = {}
        for i, t in enumerate(raw):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise V2Error(400, f"inputs[{i}] must be an object with a string 'name'")
            if t["name"] in tensors:
                raise V2Error(400, f"input {shown(t['name'])} is given more than once")
            if len(tensors) == most:  # nothing read past what a model can take
                raise V2Error(
                    400, f"the request has {len(raw)} inputs; model {self.info.name!r} takes "
                    f"at most {most}: " + ", ".join(repr(c.name) for c in self.columns[:20]),
                )  # fmt: skip
            tensors[t["name"]] = t
        try:
            chunks = binary_chunks(raw, blob)
        except BinaryFormatError as exc:
            raise V2Error(400, str(exc)) from None

        # JSON true/false anywhere in the request: numeric data must then be checked value by
        # value (NumPy would take true as 1.0); without them, NumPy's own reading tells
        text = header if isinstance(header, bytes) else bytes(header)
        literals = b"true" in text or b"false" in text
        specs = self.columns
        if self.tensor is not None and not (
            self.tensor.name not in tensors and set(tensors) == {c.name for c in self.columns}
        ):
            specs = (self.tensor,)
        self._check_names(tensors, specs)
        arrays: dict[str, np.ndarray] = {}
        rows = -1
        for spec in specs:
            arr = _tensor(tensors[spec.name], spec, chunks.get(spec.name), self.max_rows, literals)
            if rows not in (-1, arr.shape[0]):
                raise V2Error(
                    400, f"input {spec.name!r} has {arr.shape[0]} rows; other inputs have {rows}"
                )
            rows = arr.shape[0]
            arrays[spec.name] = arr
        if self.tensor is not None and specs is self.columns:  # columns given: stack them
            np_dtype = NUMPY_DTYPE[self.tensor.dtype]
            stacked = np.column_stack([arrays[c.name] for c in self.columns]).astype(np_dtype)
            arrays = {self.tensor.name: stacked}

        request_id = doc.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise V2Error(400, "'id' must be a string")
        params = doc.get("parameters")
        binary_default = isinstance(params, dict) and params.get("binary_data_output") is True
        outputs, binary = self._requested_outputs(doc.get("outputs"), binary_default)
        return InferRequest(
            inputs=arrays,
            rows=rows,
            outputs=outputs,
            id=request_id if isinstance(request_id, str) else None,
            binary_outputs=binary,
        )

    def _check_names(self, tensors: dict[str, Any], specs: tuple[TensorSpec, ...]) -> None:
        expected = [s.name for s in specs]
        for name in tensors:
            if name not in expected:
                raise V2Error(
                    400,
                    f"unexpected input {shown(name)}; model {self.info.name!r} takes "
                    + ", ".join(f"{s.name!r} ({s.datatype})" for s in specs),
                )
        for name in expected:
            if name not in tensors:
                raise V2Error(400, f"missing input {name!r} for model {self.info.name!r}")

    def _requested_outputs(
        self, raw: object, binary_default: bool
    ) -> tuple[tuple[str, ...], frozenset[str]]:
        """The requested output names, and those to answer in binary: an output's own
        ``binary_data`` parameter wins over the request's ``binary_data_output``."""
        every = frozenset(self.output_names) if binary_default else frozenset()
        if raw is None:
            return self.output_names, every
        if not isinstance(raw, list):
            raise V2Error(400, "'outputs' must be a list of objects with a 'name'")
        names: list[str] = []
        binary: set[str] = set()
        for i, o in enumerate(raw):
            name = o.get("name") if isinstance(o, dict) else None
            if not isinstance(name, str):
                raise V2Error(400, f"outputs[{i}] must be an object with a string 'name'")
            if name not in self._outputs:
                raise V2Error(
                    400,
                    f"unknown output {shown(name)}; model {self.info.name!r} has "
                    + ", ".join(repr(n) for n in self.output_names),
                )
            if name in names:  # each output is answered once (a repeat would repeat the tensor)
                raise V2Error(400, f"output {name!r} is requested more than once")
            names.append(name)
            params = o.get("parameters")
            flag = params.get("binary_data") if isinstance(params, dict) else None
            if flag is True or (flag is None and binary_default):
                binary.add(name)
        if not names:
            return self.output_names, every
        return tuple(names), frozenset(binary)

    # -- responses -------------------------------------------------------------------------

    def response(
        self, outputs: Mapping[str, np.ndarray], request: InferRequest
    ) -> tuple[bytes, int | None]:
        """The response body, and the length of its JSON header when binary outputs follow it
        (for ``Inference-Header-Content-Length``; None for a plain JSON body)."""
        tensors = []
        blobs: list[bytes | memoryview] = []
        for name in request.outputs:
            out = self._outputs[name]
            arr = checked_output(outputs, name, request.rows)
            datatype = V2_DATATYPE[out.dtype]
            tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
            if name in request.binary_outputs:
                blob = encode(arr, datatype)
                blobs.append(blob)
                tensor["parameters"] = {"binary_data_size": len(blob)}
            elif datatype == "BYTES":
                tensor["data"] = [str(v) for v in arr.reshape(-1).tolist()]
            else:
                tensor["data"] = np.ascontiguousarray(arr, dtype=NUMPY_DTYPE[out.dtype]).reshape(-1)
            tensors.append(tensor)
        doc: dict[str, Any] = {"model_name": self.info.name, "model_version": self.info.version}
        if request.id is not None:
            doc["id"] = request.id
        doc["outputs"] = tensors
        header = orjson.dumps(doc, option=JSON_OPTIONS)
        if not blobs:
            return header, None
        return b"".join([header, *blobs]), len(header)


def _tensor(
    t: dict[str, Any],
    spec: TensorSpec,
    chunk: memoryview | None,
    max_rows: int = 0,
    literals: bool = True,
) -> np.ndarray:
    """One tensor -> an array of shape [rows] (column) or [rows, width], checked. ``chunk`` is
    its binary data (binary tensor extension), or None for JSON ``data``.

    Nothing is allocated from the declared shape: the data is checked against it first (its
    bytes, or its values), so what a tensor costs is bounded by what was sent. Values follow
    ``/predict``'s rules: numbers for FP (no booleans; null or NaN is a missing value; never
    infinite, and within float32 where the model takes float32), integers within the range of
    INT32/INT64, booleans for BOOL, strings for BYTES."""
    name = spec.name
    datatype = t.get("datatype")
    if datatype != spec.datatype:
        raise V2Error(
            400, f"input {name!r} has datatype {shown(datatype)}; the model expects {spec.datatype}"
        )
    shape = t.get("shape")
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise V2Error(400, f"input {name!r} needs a 'shape': a list of non-negative integers")
    want = "[rows]" if spec.width is None else f"[rows, {spec.width}]"
    if spec.width is None:
        ok = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    else:
        ok = len(shape) == 2 and shape[1] == spec.width
    if not ok:
        raise V2Error(400, f"input {name!r} has shape {shown(shape)}; the model expects {want}")
    rows = shape[0]
    if rows == 0:
        raise V2Error(400, f"input {name!r} has no rows; send at least one")
    if max_rows and rows > max_rows:
        raise V2Error(413, f"input {name!r}: {TooManyRecords(rows, max_rows, 'rows')}")
    expected = math.prod(shape)
    if chunk is not None:
        try:
            flat = decode(chunk, name, spec.datatype, expected)
        except BinaryFormatError as exc:
            raise V2Error(400, str(exc)) from None
        if flat.dtype.kind == "f":
            _check_floats(flat, spec)
        arr = flat.astype(NUMPY_DTYPE[spec.dtype], copy=False)  # no copy on little-endian hosts
        return arr.reshape((rows,) if spec.width is None else (rows, spec.width))
    data = t.get("data")
    if data is None:
        raise V2Error(400, f"input {name!r} has no 'data'")
    if not isinstance(data, list):
        raise V2Error(400, f"input {name!r}: 'data' must be a list")
    flat_data = _flatten(data, shape, name)
    if len(flat_data) != expected:
        raise V2Error(
            400, f"input {name!r} has {len(flat_data)} values; shape {shape} needs {expected}"
        )
    arr = _to_array(flat_data, spec, literals)
    return arr.reshape((rows,) if spec.width is None else (rows, spec.width))


_TYPES: dict[str, tuple[frozenset[type], str]] = {
    "BYTES": (frozenset({str}), "strings"),
    "BOOL": (frozenset({bool}), "booleans (true, false)"),
    "INT32": (frozenset({int}), "integers"),
    "INT64": (frozenset({int}), "integers"),
    "FP32": (frozenset({int, float, type(None)}), "numbers (null: a missing value)"),
    "FP64": (frozenset({int, float, type(None)}), "numbers (null: a missing value)"),
}


def _flatten(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """Row-major values of flat or nested ``data``: nested data must follow the shape exactly
    (a list of rows of ``shape[1]`` values); no deeper nesting is read."""
    if not data or type(data[0]) is not list:
        return data  # flat (a list inside is refused by the type check)
    if not (
        len(shape) == 2
        and len(data) == shape[0]
        and all(type(row) is list and len(row) == shape[1] for row in data)
    ):
        raise V2Error(
            400,
            f"input {name!r}: nested 'data' must be rectangular and follow the shape {shape} "
            "(a list of rows), or be flat",
        )
    return list(chain.from_iterable(data))


def _to_array(flat: list[Any], spec: TensorSpec, literals: bool = True) -> np.ndarray:
    """``literals``: the request may hold JSON true/false (else numbers are read by NumPy,
    which tells a string, a null or a list by the dtype it infers)."""
    name, datatype = spec.name, spec.datatype
    if not literals and len(flat) > _FEW and datatype in ("FP32", "FP64", "INT32", "INT64"):
        try:
            loose = np.array(flat)
        except (ValueError, TypeError, OverflowError):  # lists among numbers, ...
            loose = np.empty(0, dtype=object)
        kind = loose.dtype.kind
        if kind == "f" and datatype.startswith("FP"):
            _check_floats(loose, spec)
            return loose.astype(NUMPY_DTYPE[spec.dtype], copy=False)
        if kind in "iu" and loose.size:
            return _integers(loose, spec)
    allowed, what = _TYPES[datatype]
    found = set(map(type, flat))
    if not found <= allowed:
        wrong = sorted(t.__name__ for t in found - allowed)
        raise V2Error(
            400,
            f"input {name!r} ({datatype}) holds values of the wrong type ({', '.join(wrong)}): "
            f"it must hold {what}",
        )
    if datatype == "BYTES":
        return np.array(flat, dtype=object)
    target = NUMPY_DTYPE[spec.dtype]
    if datatype == "BOOL":
        return np.array(flat, dtype=target)
    if datatype.startswith("INT"):
        bounds = np.iinfo(target)
        if flat and (min(flat) < bounds.min or max(flat) > bounds.max):
            raise V2Error(400, _out_of_range(spec, bounds))
        return np.array(flat, dtype=target)
    if len(flat) <= _FEW:  # a few values: checked in Python, cheaper than NumPy's calls
        limit = FLOAT32_MAX if spec.float32 else sys.float_info.max
        for v in flat:
            if v is not None and not -limit <= v <= limit:
                raise V2Error(400, f"input {name!r} ({datatype}) holds {_beyond(v)}")
        return np.array(flat, dtype=target)
    try:
        values = np.array(flat, dtype=np.float64)  # null: NaN, a missing value
    except OverflowError:  # an integer beyond float64
        raise V2Error(400, f"input {name!r} ({datatype}) holds a value out of range") from None
    _check_floats(values, spec)
    return values.astype(target, copy=False)


_FEW = 64


def _integers(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Integers read by NumPy (int64, or uint64 past it) -> the spec's dtype, range checked;
    integers in a float tensor are numbers too."""
    target = NUMPY_DTYPE[spec.dtype]
    if spec.datatype.startswith("FP"):
        as_float = values.astype(np.float64)
        _check_floats(as_float, spec)
        return as_float.astype(target, copy=False)
    bounds = np.iinfo(target)
    if values.min() < bounds.min or values.max() > bounds.max:
        raise V2Error(400, _out_of_range(spec, bounds))
    return values.astype(target, copy=False)


def _out_of_range(spec: TensorSpec, bounds: np.iinfo[Any]) -> str:
    return (
        f"input {spec.name!r} ({spec.datatype}) holds invalid values: out of range "
        f"[{bounds.min}, {bounds.max}]"
    )


def _beyond(value: float) -> str:
    try:
        value = float(value)
    except OverflowError:
        return "a value out of range"
    return "an infinite value" if math.isinf(value) else f"{value:g}, beyond float32"


def _check_floats(values: np.ndarray, spec: TensorSpec) -> None:
    """No infinite value, none beyond float32 where the model takes float32 (the cast would
    make it infinite); NaN is a missing value, as null is."""
    if spec.float32 and values.dtype != np.float32:
        bad = np.abs(values) > FLOAT32_MAX  # infinities included; NaN compares False
    else:
        bad = np.isinf(values)
    if bad.any():
        raise V2Error(400, f"input {spec.name!r} ({spec.datatype}) holds {_beyond(values[bad][0])}")
