"""NumPy ``.npy`` arrays: an object-dtype array is a pickle; a numeric one is only checked.

The header is a small Python dict literal. It is evaluated with :func:`ast.literal_eval` only
after its size and shape have been checked; array data is never read, except the pickle that
an object array carries (that is what ``np.load(allow_pickle=True)`` unpickles).
"""

from __future__ import annotations

import ast
import math
import re
import struct

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity

_MAGIC = b"\x93NUMPY"
# Header text parsed, padding left out. numpy refuses headers over 10 000 bytes by default but
# reads any size with allow_pickle=True: a longer one is reported as not verified.
_MAX_HEADER = 1024 * 1024
# Brackets in a header: above Python's own parser limit (200), so every header numpy can parse
# is parsed here too; deeper ones fail in numpy as well.
_MAX_NESTING = 256
_TYPESTR = re.compile(r"[<>|=]?([a-zA-Z?])(\d*)(\[[A-Za-z0-9]+\])?")
_SIZED_KINDS = {"b": 1, "i": 1, "u": 1, "f": 1, "c": 1, "S": 1, "a": 1, "V": 1, "U": 4}


class _BadHeader(ValueError):
    pass


def _typestr_size(text: str) -> int | None:
    """Item size of a dtype string (``'<f4'`` -> 4), None when it holds objects or is unknown."""
    m = _TYPESTR.fullmatch(text)
    if m is None:
        raise _BadHeader(f"invalid dtype string {text[:40]!r}")
    kind, digits, _unit = m.groups()
    if kind == "O":
        return None
    if kind == "?":
        return 1
    if kind in "Mm":
        return int(digits or 8)
    if kind in _SIZED_KINDS and digits:
        return _SIZED_KINDS[kind] * int(digits)
    raise _BadHeader(f"unsupported dtype string {text[:40]!r}")


def _has_object(descr: object, depth: int = 0) -> bool:
    if depth > _MAX_NESTING:
        raise _BadHeader("dtype description nested too deeply")
    if isinstance(descr, str):
        m = _TYPESTR.fullmatch(descr)
        return m is not None and m.group(1) == "O"
    if isinstance(descr, list | tuple):
        return any(_has_object(part, depth + 1) for part in descr)
    return False


def _itemsize(descr: object, depth: int = 0) -> int:
    """Packed item size of a descr (a dtype string or a list of fields)."""
    if depth > _MAX_NESTING:
        raise _BadHeader("dtype description nested too deeply")
    if isinstance(descr, str):
        size = _typestr_size(descr)
        if size is None:
            raise _BadHeader("object field")
        return size
    if not isinstance(descr, list):
        raise _BadHeader(f"descr must be a string or a list, not {type(descr).__name__}")
    total = 0
    for field in descr:
        if not isinstance(field, tuple) or len(field) not in (2, 3):
            raise _BadHeader("structured dtype field must be a (name, type[, shape]) tuple")
        count = 1
        if len(field) == 3:
            count = _count(field[2])
        total += _itemsize(field[1], depth + 1) * count
    return total


def _count(shape: object) -> int:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise _BadHeader(f"shape must be a tuple of non-negative ints, got {shape!r:.60}")
    return math.prod(shape)


def _parse_header(text: str) -> dict[str, object]:
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise _BadHeader("header is not a dict literal")
    depth = deepest = 0
    for ch in stripped:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > _MAX_NESTING:
        raise _BadHeader("header nested too deeply")
    try:
        header = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise _BadHeader(f"header is not a Python literal: {type(exc).__name__}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise _BadHeader("header must have exactly the keys descr, fortran_order and shape")
    if not isinstance(header["fortran_order"], bool):
        raise _BadHeader("fortran_order must be a bool")
    return header


def scan_npy(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Check an NPY header; hand an object array's pickle to the pickle scanner."""
    head = bytes(data[:12])
    if len(head) < 10 or not head.startswith(_MAGIC):
        _malformed(ctx, loc, "file too short for an NPY header", Severity.MEDIUM)
        return None
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", head, 8)
        start = 10
    elif major in (2, 3) and len(head) >= 12:
        (hlen,) = struct.unpack_from("<I", head, 8)
        start = 12
    else:
        _malformed(ctx, loc, f"unknown NPY format version {major}.{head[7]}", Severity.MEDIUM)
        return None
    if start + hlen > len(data):
        _malformed(ctx, loc, f"NPY header length {hlen} is too large for the file", Severity.MEDIUM)
        return None
    if hlen > ctx.limits.max_header_bytes:
        ctx.limit(
            "npy-header",
            f"NPY header of {hlen} bytes is over the {ctx.limits.max_header_bytes}-byte header "
            "limit: the array (and any pickle in it) was not verified",
            loc.at(start),
        )
        return None
    raw = bytes(data[start : start + hlen])
    data_start = start + hlen
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1").strip()
        if len(text) > _MAX_HEADER:
            ctx.limit(
                "npy-header",
                f"NPY header holds {len(text)} characters besides padding, over the "
                f"{_MAX_HEADER} the scanner parses: the array (and any pickle in it) was not "
                "verified",
                loc.at(start),
            )
            return None
        header = _parse_header(text)
        descr = header["descr"]
        count = _count(header["shape"])
        is_object = _has_object(descr)
        itemsize = 0 if is_object else _itemsize(descr)
    except (_BadHeader, UnicodeDecodeError) as exc:
        _malformed(ctx, loc.at(start), f"invalid NPY header: {exc}", Severity.MEDIUM)
        return None
    if is_object:
        return _scan_object(data, data_start, descr, loc=loc, ctx=ctx, depth=depth)
    expected = count * itemsize
    actual = len(data) - data_start
    if actual < expected:
        _malformed(
            ctx,
            loc.at(data_start),
            f"array data is {actual} bytes, the header promises {expected}",
            Severity.MEDIUM,
        )
    elif actual > expected:
        extra = actual - expected
        _malformed(
            ctx,
            loc.at(data_start + expected),
            f"{extra} bytes after the array data",
            Severity.LOW,
        )
        if extra > ctx.limits.max_member_bytes:
            ctx.not_scanned(
                f"{extra} bytes after the array data are over the "
                f"{ctx.limits.max_member_bytes}-byte member limit and were not scanned",
                loc.at(data_start + expected),
            )
        else:
            tail = bytes(data[data_start + expected :])
            ctx.scan_blob(tail, loc.child("[trailing data]"), depth + 1, name="trailing")
    return "npy"


def _scan_object(
    data: Blob, data_start: int, descr: object, *, loc: Location, ctx: ScanContext, depth: int
) -> str:
    ctx.add(
        Severity.MEDIUM,
        "numpy.object-array",
        f"object-dtype array (descr {descr!r:.80}): its data is a pickle that "
        "np.load(allow_pickle=True) unpickles",
        loc.at(data_start),
        why="loading it runs the pickle below; prefer numeric arrays or safetensors",
        symbol=str(descr)[:80],
    )
    size = len(data) - data_start
    if size > ctx.limits.max_member_bytes:
        ctx.not_scanned(
            f"object-array pickle of {size} bytes is over the {ctx.limits.max_member_bytes}-byte "
            "limit and was not scanned",
            loc.at(data_start),
        )
        return "npy-object"
    payload = bytes(data[data_start:])
    ctx.scan_blob(
        payload, loc.child("[object-array pickle]"), depth + 1, name="object.pkl", read_as="pickle"
    )
    return "npy-object"


def _malformed(ctx: ScanContext, loc: Location, message: str, severity: Severity) -> None:
    ctx.add(
        severity,
        "numpy.malformed",
        message,
        loc,
        why="np.load refuses or misreads such a file; nothing in it was executed",
    )
