"""Compressed streams (gzip, bz2, xz, lzma, zlib, lz4, old joblib ``ZF``): inflate with caps, scan.

joblib picks its decompressor from the magic prefix and unpickles the result, so a compressed
``.joblib`` is a pickle in disguise. Streams are inflated incrementally, a bounded chunk at a
time, and every chunk is charged to the file's budget: a bomb is stopped at the limit (or as
soon as its ratio gives it away), never inflated in full.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelcrate.scan.context import SCANNERS, Blob, ScanContext, Scanner
from modelcrate.scan.findings import Location, Severity

IN_CHUNK = 64 * 1024  # compressed bytes fed per step: small, so the ratio check bites early
OUT_CHUNK = 1024 * 1024  # decompressed bytes taken per step

# old joblib (< 0.10) ``write_zfile``: b"ZF" + hex(length).ljust(19) + zlib stream
_ZF_HEADER = 2 + 19

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"ZF0x", "joblib-zf"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"BZh", "bz2"),
)
_EXTENSIONS = (".gz", ".gzip", ".bz2", ".xz", ".lzma", ".lz4", ".z", ".zlib")


class Decoder(Protocol):
    """The incremental API shared by bz2/lzma/lz4 decompressor objects."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class ZlibDecoder:
    """:func:`zlib.decompressobj` behind the ``needs_input`` API of the other decompressors."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""
        self._full = False

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._full

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def unconsumed_tail(self) -> bytes:
        """Input given but not inflated yet (zlib stops at ``max_length`` of output)."""
        return self._tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        buf = self._tail + data if self._tail else data
        out = self._d.decompress(buf, max(0, max_length))
        self._tail = self._d.unconsumed_tail
        self._full = max_length > 0 and len(out) >= max_length
        return out


@dataclass(frozen=True)
class Inflated:
    """What came out of one bounded decompression."""

    data: bytes
    complete: bool  # the stream reached its end marker
    stopped: bool  # a limit stopped it (already reported)
    error: str | None  # the decoder's complaint on corrupt input
    trailing: int  # bytes after the end of the (last) stream


_DECODE_ERRORS = (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError, RuntimeError)


def bounded_decompress(
    data: Blob,
    start: int,
    end: int,
    *,
    make_decoder: Callable[[], Decoder],
    ctx: ScanContext,
    loc: Location,
    multi_magic: bytes = b"",
) -> Inflated:
    """Inflate ``data[start:end]`` in bounded steps under the member cap, ratio and file budget.

    ``make_decoder`` is a zero-argument factory. With ``multi_magic``, concatenated streams
    (multi-member gzip, multi-stream bz2/xz) are decoded one after another, as their readers do.
    """
    factory = make_decoder
    lim = ctx.limits
    d: Decoder = factory()
    out = bytearray()
    pos = stream_start = start
    produced_here = 0
    error: str | None = None
    stopped = False
    while True:
        if d.eof:
            nxt = pos - len(d.unused_data or b"")
            if multi_magic and bytes(data[nxt : nxt + len(multi_magic)]) == multi_magic:
                d = factory()
                pos = stream_start = nxt
                produced_here = 0
                continue
            break
        chunk = b""
        if d.needs_input:
            if pos >= end:
                break
            chunk = bytes(data[pos : min(end, pos + IN_CHUNK)])
            pos += len(chunk)
        try:
            piece = d.decompress(chunk, OUT_CHUNK)
        except _DECODE_ERRORS as exc:
            error = str(exc) or type(exc).__name__
            break
        if not piece:
            if not chunk and not d.needs_input and not d.eof:
                error = "decoder made no progress"
                break
            continue
        produced_here += len(piece)
        if len(out) + len(piece) > lim.max_member_bytes:
            ctx.limit(
                "member",
                f"decompressed member exceeds {lim.max_member_bytes} bytes; scanned its start only",
                loc,
            )
            stopped = True
            break
        # zlib keeps input it has not used yet in unconsumed_tail: leave it out of the ratio
        tail = len(getattr(d, "unconsumed_tail", b""))
        consumed = max(1, pos - stream_start - tail)
        if produced_here > lim.ratio_floor and produced_here / consumed > lim.max_ratio:
            ctx.limit(
                "ratio",
                f"compression ratio over {lim.max_ratio:.0f}:1 after {produced_here} bytes "
                f"(decompression bomb); stopped inflating",
                loc,
            )
            stopped = True
            break
        if not ctx.charge_inflated(len(piece), 0, loc):
            stopped = True
            break
        out += piece
    complete = d.eof
    trailing = 0
    if complete:
        after = pos - len(d.unused_data or b"")
        trailing = len(data[after:end].rstrip(b"\x00")) if end - after < 1 << 20 else end - after
    return Inflated(bytes(out), complete, stopped, error, trailing)


def _kind(data: Blob) -> str | None:
    head = bytes(data[:16])
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    if head[:1] == b"\x5d" and head[5:13] == b"\xff" * 8:
        return "lzma"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    return None


def _decoder_factory(kind: str) -> Callable[[], Decoder] | None:
    if kind == "gzip":
        return lambda: ZlibDecoder(16 + zlib.MAX_WBITS)
    if kind in ("zlib", "joblib-zf"):
        return lambda: ZlibDecoder(zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Decompressor
    if kind in ("xz", "lzma"):
        return lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO)
    if kind == "lz4":
        try:
            import lz4.frame
        except ImportError:
            return None
        factory: Callable[[], Decoder] = lz4.frame.LZ4FrameDecompressor
        return factory
    return None


def _inner_name(loc: Location, kind: str) -> str:
    base = (loc.members[-1] if loc.members else loc.path).replace("\\", "/").rsplit("/", 1)[-1]
    low = base.lower()
    for ext in _EXTENSIONS:
        if low.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return f"{base}[{kind}]"


def scan_compressed(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Inflate a compressed stream under the limits and scan what it holds."""
    kind = _kind(data)
    if kind is None:
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            "compressed stream with an unrecognised header",
            loc.at(0),
            why="the content could not be decompressed, so it was not verified",
        )
        return None
    factory = _decoder_factory(kind)
    if factory is None:
        ctx.add(
            Severity.HIGH,
            "archive.unsupported",
            f"{kind} stream cannot be opened: the lz4 package is missing "
            "(install modelcrate[scan])",
            loc.at(0),
            why="joblib decompresses it and unpickles the result; its content was not verified",
        )
        return kind
    start = 0
    if kind == "joblib-zf":
        start = _ZF_HEADER
        declared = bytes(data[2:_ZF_HEADER]).strip()
        try:
            length = int(declared, 16)
        except ValueError:
            length = -1
            ctx.add(
                Severity.MEDIUM,
                "archive.malformed",
                f"joblib ZF header has an invalid length field {declared[:24]!r}",
                loc.at(2),
                why="joblib would fail to read it; the stream was scanned anyway",
            )
        if length > ctx.limits.max_member_bytes:
            ctx.add(
                Severity.HIGH,
                "archive.bomb",
                f"joblib ZF header declares {length} decompressed bytes, over the "
                f"{ctx.limits.max_member_bytes}-byte member limit",
                loc.at(2),
                why="a decompression bomb; only the start of the stream was inflated",
            )
    multi = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}.get(kind, b"")
    name = _inner_name(loc, kind)
    result = bounded_decompress(
        data, start, len(data), make_decoder=factory, ctx=ctx, loc=loc, multi_magic=multi
    )
    if kind == "zlib" and result.error is not None and not result.data:
        return _not_zlib(data, loc, ctx, depth)
    if result.error is not None:
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            f"corrupt {kind} stream after {len(result.data)} decompressed bytes "
            f"({result.error}); the decompressed part was scanned",
            loc,
            why="a loader reads up to the corruption; what comes before it was verified",
        )
    elif not result.complete and not result.stopped:
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            f"truncated {kind} stream: it ends after {len(result.data)} decompressed bytes "
            "without its end marker; the decompressed part was scanned",
            loc,
            why="a streaming loader may still act on the decompressed prefix",
        )
    if result.trailing:
        ctx.add(
            Severity.LOW,
            "archive.malformed",
            f"{result.trailing} bytes after the end of the {kind} stream",
            loc,
            why="data that decompressors ignore can hide a second payload for other readers",
        )
    # only joblib reads raw zlib, raw lzma and ZF streams: it unpickles what they hold
    read_as = "pickle" if kind in ("joblib-zf", "zlib", "lzma") else None
    inner = ctx.scan_blob(result.data, loc.child(name), depth + 1, name=name, read_as=read_as)
    if inner.startswith(("pickle", "joblib")):
        return f"joblib-{kind.removeprefix('joblib-')}"
    return f"{kind}+{inner}"


def _not_zlib(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Two bytes looked like a zlib header but no stream followed: scan the bytes as a pickle.

    The zlib header check is only 2 bytes wide; a protocol-0 pickle such as ``(S"...`` passes
    it. Handing the raw bytes to the pickle scanner keeps such a file from slipping through
    (unless the engine already analyses these bytes as a pickle too).
    """
    ctx.add(
        Severity.LOW,
        "format.mismatch",
        "starts like a zlib stream but does not decompress; scanned as a pickle instead",
        loc.at(0),
        why="a 2-byte zlib header match is weak evidence; a protocol-0 pickle can look the same",
    )
    if "pickle" in ctx.blob_formats:
        return None
    module, _, func = SCANNERS["pickle"].partition(":")
    scanner: Scanner = getattr(importlib.import_module(module), func)
    return scanner(data, loc, ctx, depth)
