"""safetensors: an 8-byte header length, a JSON header, then tightly packed tensor bytes.

The format is safe by design only when the header obeys its rules; this checks them all as
the reference implementation (``safetensors/src/tensor.rs``) does, and a few it leaves out
(duplicate names, trailing bytes that make a polyglot). Tensor data is never read.
"""

from __future__ import annotations

import json
import struct

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.template_ssti import check_template

# dtype -> bits per element
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
MAX_FINDINGS = 20
_USIZE_MAX = (1 << 64) - 1


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


class _Report:
    def __init__(self, ctx: ScanContext, loc: Location) -> None:
        self.ctx, self.loc, self.count = ctx, loc, 0

    def bad(self, message: str, offset: int | None = None, why: str = "") -> None:
        self.count += 1
        if self.count > MAX_FINDINGS:
            return
        self.ctx.add(
            Severity.HIGH,
            "safetensors.malformed",
            message,
            self.loc.at(offset),
            why=why
            or "loaders disagree on files that break the format's rules; the layout "
            "can hide a second payload or trigger out-of-bounds reads",
        )


def scan_safetensors(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Validate a safetensors header and layout without reading tensor data."""
    rep = _Report(ctx, loc)
    size = len(data)
    if size < 8:
        rep.bad(f"file of {size} bytes is too short for a safetensors header length", 0)
        return "safetensors"
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > size - 8:
        rep.bad(f"header length {n} runs past the end of the {size}-byte file", 0)
        return "safetensors"
    if n > ctx.limits.max_header_bytes:
        ctx.limit(
            "header",
            f"header length {n} exceeds the {ctx.limits.max_header_bytes}-byte limit: the header "
            "and the rest of the file were not verified",
            loc.at(0),
        )
        return "safetensors"
    raw = bytes(data[8 : 8 + n])
    if not raw.startswith(b"{"):
        rep.bad("header does not start with '{'", 8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        rep.bad(f"header is not valid UTF-8 ({exc.reason} at byte {8 + exc.start})", 8 + exc.start)
        return "safetensors"
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        rep.bad(
            f"header defines {exc.key!r} more than once",
            8,
            why="JSON parsers disagree on duplicate keys (first or last wins): a scanner and "
            "a loader can see different tensors",
        )
        return "safetensors"
    except (ValueError, RecursionError) as exc:
        rep.bad(f"header is not valid JSON: {str(exc)[:120]}", 8)
        return "safetensors"
    if not isinstance(header, dict):
        rep.bad(f"header is a JSON {type(header).__name__}, not an object", 8)
        return "safetensors"
    _check_metadata(header.pop("__metadata__", None), rep, loc, ctx)
    spans = _check_tensors(header, rep)
    _check_layout(spans, size - 8 - n, 8 + n, rep)
    data_len = size - 8 - n
    end = max((e for _, _, e in spans), default=0)
    if end < data_len:
        if data_len - end > ctx.limits.max_member_bytes:
            ctx.not_scanned(
                f"{data_len - end} trailing bytes after the last tensor are over the "
                f"{ctx.limits.max_member_bytes}-byte member limit and were not scanned",
                loc.at(8 + n + end),
            )
        else:
            trailing = bytes(data[8 + n + end :])
            ctx.scan_blob(trailing, loc.child("<trailing bytes>"), depth + 1, name="trailing")
    return "safetensors"


def _check_metadata(meta: object, rep: _Report, loc: Location, ctx: ScanContext) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict):
        rep.bad("__metadata__ is not an object of strings", 8)
        return
    for key, value in meta.items():
        if not isinstance(value, str):
            rep.bad(f"__metadata__[{key!r}] is a {type(value).__name__}, not a string", 8)
            continue
        if len(value) > ctx.limits.max_string_bytes:
            rep.bad(f"__metadata__[{key!r}] holds a {len(value)}-character string", 8)
        if "{{" in value or "{%" in value:
            check_template(value, loc.at(8), ctx, f"safetensors __metadata__[{key!r}]")


def _check_tensors(header: dict[str, object], rep: _Report) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for name, info in header.items():
        label = f"tensor {name[:200]!r}"
        if not isinstance(info, dict):
            rep.bad(f"{label}: entry is not an object", 8)
            continue
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            rep.bad(f"{label}: missing {', '.join(missing)}", 8)
            continue
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
        if bits is None:
            rep.bad(f"{label}: unknown dtype {str(dtype)[:40]!r}", 8)
        if not isinstance(shape, list) or not all(_uint(d) for d in shape):
            rep.bad(f"{label}: shape {str(shape)[:80]} is not a list of non-negative integers", 8)
            shape = None
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_uint(o) for o in offsets):
            rep.bad(f"{label}: data_offsets {str(offsets)[:80]} is not [begin, end]", 8)
            continue
        begin, end = offsets
        if end < begin:
            rep.bad(f"{label}: data_offsets end {end} is before begin {begin}", 8)
            continue
        spans.append((name, begin, end))
        if bits is None or shape is None:
            continue
        numel = 1
        for d in shape:
            numel *= d
        nbits = numel * bits
        if nbits // 8 > _USIZE_MAX or numel > _USIZE_MAX:
            rep.bad(f"{label}: shape {shape[:8]} overflows a 64-bit size", 8)
        elif nbits % 8:
            rep.bad(f"{label}: {numel} elements of {dtype} do not fill whole bytes", 8)
        elif nbits // 8 != end - begin:
            rep.bad(
                f"{label}: shape {shape[:8]} of {dtype} needs {nbits // 8} bytes but "
                f"data_offsets span {end - begin}",
                8,
            )
    return spans


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_layout(
    spans: list[tuple[str, int, int]], data_len: int, base: int, rep: _Report
) -> None:
    cursor = 0
    for name, begin, end in sorted(spans, key=lambda s: (s[1], s[2])):
        label = f"tensor {name[:200]!r}"
        if begin > cursor:
            rep.bad(f"{label}: gap of {begin - cursor} unused bytes before it", 8)
        elif begin < cursor:
            rep.bad(f"{label}: data_offsets [{begin}, {end}] overlap the previous tensor", 8)
        cursor = max(cursor, end)
    if cursor > data_len:
        rep.bad(
            f"tensor data ends at {cursor}, past the {data_len} bytes of the data section", base
        )
    elif cursor < data_len:
        rep.bad(
            f"{data_len - cursor} trailing bytes after the last tensor",
            base + cursor,
            why="bytes outside every tensor are a second payload (a polyglot pickle or zip "
            "that another loader would open)",
        )
