"""7-Zip archives (the nullifAI wrapping of PyTorch checkpoints), read into memory under limits.

py7zr is an optional extra, imported only here. Members are decompressed into bounded
in-memory buffers (never to disk); a member or archive past the limits stops the extraction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from modelcrate.scan.archive_links import LinkChecker
from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.zipscan import name_problem, report_name

_SYMLINK_READ = 4096


class _Stop(Exception):
    """Raised from a write to abort extraction at a limit (already reported)."""


@dataclass
class _Buffer:
    """One member's bytes, charged to the scan budget as they arrive."""

    name: str
    sink: _Sink
    data: io.BytesIO = field(default_factory=io.BytesIO)

    def write(self, s: bytes | bytearray) -> int:
        self.sink.take(self.name, len(s), self.data.tell() + len(s))
        return self.data.write(s)

    def read(self, size: int | None = None) -> bytes:
        return self.data.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.data.seek(offset, whence)

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.data.getbuffer().nbytes

    def close(self) -> None:
        return None


@dataclass
class _Sink:
    """The py7zr writer factory: hands out buffers, enforces the limits."""

    ctx: ScanContext
    loc: Location
    compressed: int
    produced: int = 0
    products: dict[str, _Buffer] = field(default_factory=dict)

    def create(self, filename: str) -> _Buffer:
        buf = _Buffer(filename, self)
        self.products[filename] = buf
        return buf

    def take(self, name: str, n: int, member_total: int) -> None:
        lim = self.ctx.limits
        self.produced += n
        if member_total > lim.max_member_bytes:
            self.ctx.limit(
                "member",
                f"7z member {name!r} exceeds {lim.max_member_bytes} bytes; extraction stopped",
                self.loc,
            )
            raise _Stop
        ratio = self.produced / max(1, self.compressed)
        if self.produced > lim.ratio_floor and ratio > lim.max_ratio:
            self.ctx.limit(
                "ratio",
                f"7z compression ratio over {lim.max_ratio:.0f}:1 (decompression bomb); "
                "extraction stopped",
                self.loc,
            )
            raise _Stop
        if not self.ctx.charge_inflated(n, 0, self.loc):
            raise _Stop


def scan_7z(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan every member of a 7z archive in memory; without py7zr, report it unverifiable."""
    try:
        import py7zr
    except ImportError:
        ctx.add(
            Severity.HIGH,
            "archive.unsupported",
            "7z archive cannot be opened: the py7zr package is missing (install modelcrate[scan])",
            loc,
            why="its members (often a wrapped PyTorch checkpoint) were not verified",
        )
        return "7z"
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(bytes(data)), mode="r")
    except Exception as exc:  # py7zr raises many types on bad input
        _malformed(ctx, loc, f"unreadable 7z archive: {type(exc).__name__}: {exc}")
        return "7z"
    with archive:
        return _scan_archive(archive, data, loc, ctx, depth)


def _scan_archive(archive: Any, data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str:
    lim = ctx.limits
    if archive.needs_password():
        ctx.add(
            Severity.HIGH,
            "archive.encrypted",
            "7z archive is password-protected and cannot be read",
            loc,
            why="its content cannot be verified; ship models unencrypted",
        )
        return "7z"
    infos = list(archive.list())
    ctx.entries += len(infos)
    if len(infos) > lim.max_entries:
        ctx.limit("entries", f"7z holds {len(infos)} members, over {lim.max_entries}", loc)
        return "7z"
    declared = sum(int(i.uncompressed or 0) for i in infos)
    if declared > lim.max_inflated_bytes:
        ctx.limit(
            "inflated",
            f"7z members declare {declared} decompressed bytes, over the "
            f"{lim.max_inflated_bytes}-byte limit; not extracted",
            loc,
        )
        return "7z"
    targets: list[str] = []
    links: list[str] = []
    for info in infos:
        name = str(info.filename)
        report_name(ctx, name, loc)
        if info.is_directory or name_problem(name) is not None:
            continue  # py7zr refuses to handle escaping names; they are reported above
        targets.append(name)
        if info.is_symlink:
            links.append(name)
    sink = _Sink(ctx, loc, len(data))
    try:
        archive.extract(targets=targets, factory=sink)
    except _Stop:
        pass
    except Exception as exc:  # a corrupt stream must not hide others
        _malformed(
            ctx, loc, f"7z extraction failed: {type(exc).__name__}: {exc}; what was read is scanned"
        )
    checker = LinkChecker(ctx, loc)
    for info in infos:  # in archive order, as py7zr creates them
        name = str(info.filename)
        if info.is_directory:
            checker.member(name, "dir", loc.child(name))
        elif name in links and name in sink.products:
            raw = sink.products[name].data.getvalue()[:_SYMLINK_READ]
            checker.member(name, "symlink", loc.child(name), raw.decode("utf-8", "replace"))
        else:
            checker.member(name, "file", loc.child(name))
    checker.finish()
    for name, buf in sink.products.items():
        if name not in links:
            ctx.scan_blob(buf.data.getvalue(), loc.child(name), depth + 1, name=name)
    return "7z"


def _malformed(ctx: ScanContext, loc: Location, message: str) -> None:
    ctx.add(
        Severity.MEDIUM,
        "archive.malformed",
        message,
        loc,
        why="the archive is damaged; members that could be read were scanned",
    )
