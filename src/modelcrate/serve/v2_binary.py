"""The binary tensor data extension of the Open Inference Protocol V2 (Triton / KServe REST).

A binary request carries ``Inference-Header-Content-Length: N``: its first ``N`` bytes are the
JSON header, the rest is the raw data of the inputs whose ``parameters.binary_data_size`` is set,
in the order those inputs are listed. Numeric tensors are little-endian, row-major; ``BOOL`` is
one byte per element; a ``BYTES`` element is a 4-byte little-endian length and that many bytes.
A response whose outputs are requested with ``binary_data`` (or the request parameter
``binary_data_output``) answers the same way: the header names the JSON length and each binary
output carries ``parameters.binary_data_size`` instead of ``data``.

Numeric inputs are read in place with ``np.frombuffer`` (no copy); errors are
:class:`BinaryFormatError` with a message that names the problem (the caller answers 400).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelcrate.serve.validation import shown

HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"

# Wire dtypes: explicitly little-endian, whatever the host.
WIRE_DTYPE: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
}
_LENGTH = struct.Struct("<I")


class BinaryFormatError(ValueError):
    """Binary tensor data that does not match its JSON header."""


def split_body(body: bytes, header_length: str) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary part of a request, per its header-length value."""
    try:
        length = int(header_length)
    except ValueError:
        raise BinaryFormatError(
            f"{HEADER} must be a non-negative integer, not {shown(header_length)}"
        ) from None
    if length < 0 or length > len(body):
        raise BinaryFormatError(f"{HEADER} is {length}, but the request body has {len(body)} bytes")
    view = memoryview(body)
    return view[:length], view[length:]


def binary_chunks(inputs: Sequence[object], blob: memoryview | None) -> dict[str, memoryview]:
    """Each binary input's bytes, cut from ``blob`` in the order the inputs are listed.

    ``inputs`` is the request's (already shape-checked) ``inputs`` list. Every byte of ``blob``
    must belong to an input. With ``blob`` None (a plain JSON request), any input that declares
    ``binary_data_size`` is an error.
    """
    chunks: dict[str, memoryview] = {}
    offset = 0
    for t in inputs:
        if not isinstance(t, dict):
            continue
        params = t.get("parameters")
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        name = shown(t.get("name"))
        if blob is None:
            raise BinaryFormatError(
                f"input {name} uses the binary tensor extension (binary_data_size), but the "
                f"request has no {HEADER} header: send the header, or JSON 'data' "
                "(tritonclient: binary_data=False)"
            )
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BinaryFormatError(
                f"input {name}: binary_data_size must be a non-negative integer, not {shown(size)}"
            )
        if "data" in t:
            raise BinaryFormatError(f"input {name} has both 'data' and binary_data_size")
        end = offset + size
        if end > len(blob):
            raise BinaryFormatError(
                f"input {name}: binary_data_size {size} runs past the end of the body "
                f"({len(blob) - offset} bytes of binary data left)"
            )
        chunks[str(t.get("name"))] = blob[offset:end]
        offset = end
    if blob is not None and offset != len(blob):
        raise BinaryFormatError(
            f"the request has {len(blob)} bytes of binary data after the JSON header, but its "
            f"inputs' binary_data_size add up to {offset}"
        )
    return chunks


def decode(chunk: memoryview, name: str, datatype: str, count: int) -> np.ndarray:
    """``count`` elements of ``datatype`` from one input's bytes: a flat array.

    Numeric data is a read-only view of the request body; ``BYTES`` becomes an object array of
    ``str`` (UTF-8).
    """
    if datatype == "BYTES":
        return _decode_bytes(chunk, name, count)
    dtype = WIRE_DTYPE[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise BinaryFormatError(
            f"input {name!r} has {len(chunk)} bytes of binary data; {count} {datatype} "
            f"values need {count * dtype.itemsize}"
        )
    arr = np.frombuffer(chunk, dtype=dtype)
    if datatype == "BOOL" and arr.size and np.frombuffer(chunk, dtype=np.uint8).max() > 1:
        raise BinaryFormatError(f"input {name!r} (BOOL) holds bytes other than 0 and 1")
    return arr


def _decode_bytes(chunk: memoryview, name: str, count: int) -> np.ndarray:
    # every element takes at least its 4-byte length: the declared count is checked against
    # the bytes received before anything is allocated for it
    if count > len(chunk) // 4:
        raise BinaryFormatError(
            f"input {name!r} (BYTES): {count} elements need at least {4 * count} bytes "
            f"(a 4-byte length each); the request has {len(chunk)}"
        )
    out = np.empty(count, dtype=object)
    offset, end = 0, len(chunk)
    for i in range(count):
        if offset + 4 > end:
            raise BinaryFormatError(
                f"input {name!r} (BYTES): element {i} has no 4-byte length; "
                f"the data ends after {i} of {count} elements"
            )
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > end:
            raise BinaryFormatError(
                f"input {name!r} (BYTES): element {i} declares {length} bytes; "
                f"only {end - offset} are left"
            )
        try:
            out[i] = str(chunk[offset : offset + length], "utf-8")
        except UnicodeDecodeError:
            raise BinaryFormatError(f"input {name!r} (BYTES): element {i} is not UTF-8") from None
        offset += length
    if offset != end:
        raise BinaryFormatError(
            f"input {name!r} (BYTES): {end - offset} bytes left over after {count} elements"
        )
    return out


def encode(arr: np.ndarray, datatype: str) -> bytes | memoryview:
    """One output tensor's raw bytes (row-major); numeric data is not copied when it is already
    contiguous in the wire dtype."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        encoded: dict[object, bytes] = {}  # labels repeat: each distinct one is encoded once
        for v in arr.reshape(-1).tolist():
            b = encoded.get(v)
            if b is None:
                raw = v if isinstance(v, bytes) else str(v).encode()
                b = encoded[v] = _LENGTH.pack(len(raw)) + raw
            parts.append(b)
        return b"".join(parts)
    wire = np.ascontiguousarray(arr, dtype=WIRE_DTYPE[datatype])
    return wire.data.cast("B")
