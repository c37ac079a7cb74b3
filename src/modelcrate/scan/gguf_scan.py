"""GGUF (llama.cpp) files: header, metadata key/values, tensor table, chat templates.

Every count and length is checked against the bytes that remain before it is used, as
llama.cpp does after its integer-overflow fixes, so a hostile header cannot make the scanner
loop or allocate. The chat template goes through the SSTI check. Tensor data is never read.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.template_ssti import check_template

# metadata value types -> fixed size in bytes (STRING=8 and ARRAY=9 are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
# ggml type -> (block size, bytes per block), as in gguf-py's GGML_QUANT_SIZES
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    31: (32, 18), 32: (32, 18), 33: (32, 18),  # Q4_0_4_4 / 4_8 / 8_8 (removed, still seen)
    34: (256, 54), 35: (256, 66), 36: (32, 18), 37: (32, 18), 38: (32, 18), 39: (32, 17),
    40: (64, 36), 41: (128, 18),
}  # fmt: skip
MAX_DIMS = 4
MAX_ARRAY_NESTING = 2
MAX_FINDINGS = 20
MAX_ITEMS = 20_000_000  # strings in metadata arrays (a 256k vocabulary is 0.5M)
_INT64_MAX = (1 << 63) - 1


class _Stop(Exception):
    """The header is broken past the point where the rest can be located."""


@dataclass
class _Reader:
    data: Blob
    ctx: ScanContext
    loc: Location
    endian: str = "<"
    version: int = 3
    pos: int = 0
    count: int = 0
    keys: set[str] = field(default_factory=set)
    items: int = 0

    def bad(self, message: str, offset: int | None = None, *, stop: bool = False) -> None:
        self.count += 1
        if self.count <= MAX_FINDINGS:
            self.ctx.add(
                Severity.HIGH,
                "gguf.malformed",
                message,
                self.loc.at(self.pos if offset is None else offset),
                why="llama.cpp-style loaders have had memory-corruption bugs on exactly this "
                "kind of header defect",
            )
        if stop:
            raise _Stop

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            self.bad(f"{what} runs past the end of the file", stop=True)

    def u(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (v,) = struct.unpack_from(self.endian + fmt, self.data, self.pos)
        self.pos += size
        return int(v)

    def count_field(self, what: str) -> int:
        return self.u("I" if self.version == 1 else "Q", what)

    def string(self, what: str, keep: int = 0) -> str:
        start = self.pos
        n = self.count_field(f"{what} length")
        self.need(n, f"{what} of length {n}")  # past the end of the file: a defect, not a limit
        if n > self.ctx.limits.max_string_bytes:
            self.ctx.limit(
                "gguf-string",
                f"{what} length {n} exceeds the {self.ctx.limits.max_string_bytes}-byte string "
                "limit: the rest of the header (metadata, chat templates, tensor table) was not "
                "verified",
                self.loc.at(start),
            )
            raise _Stop
        raw = bytes(self.data[self.pos : self.pos + min(n, keep)]) if keep else b""
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_value(self, vtype: int, key: str, nesting: int) -> object:
        """Skip one value; return it when it is a scalar or string worth keeping."""
        if vtype in _FIXED:
            if vtype in (4, 5, 10, 11):
                return self.u(_FMT[vtype], f"value of {key!r}")
            self.skip(_FIXED[vtype], key)
            return None
        if vtype == STRING:
            keep = (
                self.ctx.limits.max_string_bytes if key.startswith("tokenizer.chat_template") else 0
            )
            return self.string(f"value of {key!r}", keep)
        if vtype == ARRAY:
            start = self.pos
            item = self.u("I", f"array type of {key!r}")
            n = self.count_field(f"array length of {key!r}")
            if nesting >= MAX_ARRAY_NESTING:
                self.bad(
                    f"{key!r}: arrays nested deeper than {MAX_ARRAY_NESTING}", start, stop=True
                )
            if item in _FIXED:
                self.need(n * _FIXED[item], f"array {key!r} of {n} items")
                self.pos += n * _FIXED[item]
            elif item in (STRING, ARRAY):
                minimum = 8 if self.version > 1 else 4
                self.need(n * minimum, f"array {key!r} of {n} items")
                self.items += n
                if self.items > MAX_ITEMS:
                    self.ctx.limit("gguf-items", f"more than {MAX_ITEMS} metadata items", self.loc)
                    raise _Stop
                for _ in range(n):
                    self.skip_value(item, key, nesting + 1)
            else:
                self.bad(f"{key!r}: unknown array item type {item}", start, stop=True)
            return None
        self.bad(f"{key!r}: unknown value type {vtype}", stop=True)
        return None

    def skip(self, n: int, key: str) -> None:
        self.need(n, f"value of {key!r}")
        self.pos += n


def scan_gguf(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Validate a GGUF header and tensor table; check chat templates for SSTI."""
    r = _Reader(data, ctx, loc)
    with contextlib.suppress(_Stop):
        _scan(r)
    return "gguf"


def _scan(r: _Reader) -> None:
    r.need(8, "GGUF header")
    r.pos = 4
    le = struct.unpack_from("<I", r.data, 4)[0]
    be = struct.unpack_from(">I", r.data, 4)[0]
    if 1 <= le <= 3:
        r.version = le
    elif 1 <= be <= 3:
        r.endian, r.version = ">", be
    else:
        r.bad(f"unsupported GGUF version {le}", 4, stop=True)
    r.pos = 8
    n_tensors = r.count_field("tensor count")
    n_kv = r.count_field("metadata count")
    remaining = len(r.data) - r.pos
    per_kv = 9 if r.version == 1 else 13  # key length, type, a one-byte value at the least
    if n_kv * per_kv > remaining:
        r.bad(f"metadata count {n_kv} cannot fit in the {remaining} bytes left", 16, stop=True)
    if n_tensors * 20 > remaining:
        r.bad(f"tensor count {n_tensors} cannot fit in the {remaining} bytes left", 8, stop=True)
    alignment = 32
    for _ in range(n_kv):
        start = r.pos
        key = r.string("metadata key", 4096)
        if key in r.keys:
            r.bad(f"metadata key {key!r} appears more than once", start)
        r.keys.add(key)
        vtype = r.u("I", f"type of {key!r}")
        value = r.skip_value(vtype, key, 0)
        if key == "general.alignment":
            if (
                vtype not in (4, 10)
                or not isinstance(value, int)
                or value <= 0
                or (value & (value - 1))
            ):
                r.bad(f"general.alignment {value!r} is not a non-zero power of two", start)
            else:
                alignment = value
        elif key.startswith("tokenizer.chat_template") and isinstance(value, str):
            check_template(value, r.loc.at(start), r.ctx, f"GGUF metadata {key!r}")
    _tensors(r, n_tensors, alignment)


def _tensors(r: _Reader, n_tensors: int, alignment: int) -> None:
    infos: list[tuple[str, int, int, int]] = []  # name, offset, nbytes, where
    names: set[str] = set()
    for _ in range(n_tensors):
        start = r.pos
        name = r.string("tensor name", 1024)
        if name in names:
            r.bad(f"tensor {name!r} appears more than once", start)
        names.add(name)
        n_dims = r.u("I", f"dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            r.bad(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})", start, stop=True)
        dims = [r.u("I" if r.version == 1 else "Q", f"dims of {name!r}") for _ in range(n_dims)]
        ggml_type = r.u("I", f"type of {name!r}")
        offset = r.u("Q", f"offset of {name!r}")
        numel = 1
        for d in dims:
            numel *= d
        if any(d > _INT64_MAX for d in dims) or numel > _INT64_MAX:
            r.bad(f"tensor {name!r}: dimensions {dims} overflow a 64-bit element count", start)
            continue
        block = GGML_TYPES.get(ggml_type)
        if block is None:
            r.bad(f"tensor {name!r} has unknown ggml type {ggml_type}", start)
            continue
        if dims and dims[0] % block[0]:
            r.bad(
                f"tensor {name!r}: first dimension {dims[0]} is not a multiple of the block "
                f"size {block[0]}",
                start,
            )
            continue
        if offset % alignment:
            r.bad(f"tensor {name!r}: offset {offset} is not aligned to {alignment}", start)
        infos.append((name, offset, numel // block[0] * block[1], start))
    data_start = -(-r.pos // alignment) * alignment
    data_size = len(r.data) - data_start
    end_prev, prev = 0, ""
    for name, offset, nbytes, where in sorted(infos, key=lambda t: t[1]):
        if offset + nbytes > data_size:
            r.bad(
                f"tensor {name!r} [{offset}, {offset + nbytes}) lies past the end of the "
                f"{max(data_size, 0)}-byte data section",
                where,
            )
        if offset < end_prev:
            r.bad(f"tensor {name!r} overlaps tensor {prev!r}", where)
        if offset + nbytes > end_prev:
            end_prev, prev = offset + nbytes, name
