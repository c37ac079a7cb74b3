"""Tar archives, including PyTorch's legacy (v0.1.1) tar checkpoints. Nothing is extracted.

Headers are parsed by :mod:`tarfile` over the mapped bytes (``ignore_zeros`` so a corrupt header
does not end the walk silently, as GNU tar also reads on); member data is sliced from the
input directly.
"""

from __future__ import annotations

import io
import pickletools
import struct
import tarfile
from typing import IO, cast

from modelcrate.scan.archive_links import LinkChecker
from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.zipscan import report_name

_LEGACY_MEMBERS = frozenset({"pickle", "storages", "tensors"})
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, OSError, struct.error, UnicodeError)
# element sizes of torch's legacy typed storages, by class name
_ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


class _BlobFile:
    """A read-only, seekable file over a Blob, without copying it."""

    def __init__(self, data: Blob) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos : end])
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _members(data: Blob, loc: Location, ctx: ScanContext) -> list[tarfile.TarInfo]:
    infos: list[tarfile.TarInfo] = []
    try:
        tf = tarfile.open(  # noqa: SIM115 - nothing to close: it reads the mapped bytes
            fileobj=cast(IO[bytes], _BlobFile(data)), mode="r:", ignore_zeros=True
        )
    except _TAR_ERRORS as exc:
        _malformed(ctx, loc.at(0), f"unreadable tar header: {exc}", Severity.MEDIUM)
        return infos
    while True:
        try:
            info = tf.next()
        except _TAR_ERRORS as exc:
            _malformed(
                ctx,
                loc.at(tf.offset),
                f"tar walk stopped: {exc}; later members unread",
                Severity.MEDIUM,
            )
            break
        if info is None:
            break
        if len(infos) >= ctx.limits.max_entries:
            ctx.limit(
                "entries",
                f"tar holds more than {ctx.limits.max_entries} members; the rest were not scanned",
                loc,
            )
            break
        infos.append(info)
    return infos


def scan_tar(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan every member of a tar; legacy PyTorch tar checkpoints are reported as such."""
    infos = _members(data, loc, ctx)
    ctx.entries += len(infos)
    names = {i.name for i in infos if i.isreg()}
    legacy = names >= _LEGACY_MEMBERS
    if legacy:
        ctx.add(
            Severity.MEDIUM,
            "torch.legacy-tar",
            "legacy tar-format PyTorch checkpoint: torch.load opens it only with "
            "weights_only=False, i.e. with the full unpickler",
            loc,
            why="every pickle in it runs unrestricted at load; convert the model to safetensors",
        )
    links = LinkChecker(ctx, loc)
    for info in infos:
        _scan_member(data, info, loc, ctx, depth=depth, legacy=legacy, links=links)
    links.finish()
    return "pytorch-legacy-tar" if legacy else "tar"


def _scan_member(
    data: Blob,
    info: tarfile.TarInfo,
    loc: Location,
    ctx: ScanContext,
    *,
    depth: int,
    legacy: bool,
    links: LinkChecker,
) -> None:
    mloc = loc.child(info.name)
    report_name(ctx, info.name, loc.at(info.offset))
    if info.issym() or info.islnk():
        kind = "symlink" if info.issym() else "hardlink"
        links.member(info.name, kind, mloc, info.linkname)
        return
    links.member(info.name, "dir" if info.isdir() else "file", mloc)
    if info.ischr() or info.isblk() or info.isfifo():
        _malformed(ctx, mloc, "member is a device node or FIFO", Severity.MEDIUM)
        return
    if not info.isreg():
        return
    start, size = info.offset_data, info.size
    if size > ctx.limits.max_member_bytes:
        ctx.not_scanned(
            f"member of {size} bytes is over the {ctx.limits.max_member_bytes}-byte limit and "
            "was not scanned",
            mloc,
        )
        return
    if start + size > len(data):
        _malformed(ctx, mloc, "member data runs past the end of the file", Severity.MEDIUM)
    content = bytes(data[start : start + size])
    if legacy and info.name in ("storages", "tensors"):
        _scan_legacy_stream(content, info.name, mloc, ctx, depth)
        return
    ctx.scan_blob(content, mloc, depth + 1, name=info.name)


def _pickle_end(stream: io.BytesIO, pos: int) -> tuple[int, str] | None:
    """End offset of the pickle starting at ``pos`` and its last global, read statically."""
    last_global = ""
    stream.seek(pos)
    try:
        for op, arg, at in pickletools.genops(stream):
            if op.name == "GLOBAL" and isinstance(arg, str):
                last_global = arg
            if op.name == "STOP":
                return (at or pos) + 1, last_global
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, KeyError):
        return None
    return None


def _scan_legacy_stream(
    blob: bytes, member: str, mloc: Location, ctx: ScanContext, depth: int
) -> None:
    """Walk ``storages``/``tensors`` as torch's legacy loader reads them; scan each pickle.

    storages: count pickle, then per storage a (key, location, type) pickle, an int64 element
    count and the raw data; then a storage-views pickle. tensors: count pickle, then per tensor
    a (key, storage id, type) pickle and a binary header (ndim, sizes, strides, offset).
    """
    pos = 0
    pieces = 0
    stream = io.BytesIO(blob)
    while pos < len(blob):
        found = _pickle_end(stream, pos)
        if found is None:
            _malformed(
                ctx,
                mloc.at(pos),
                f"legacy {member} stream has no readable pickle at offset {pos}; the rest was "
                "scanned as one blob",
                Severity.MEDIUM,
            )
            ctx.scan_blob(
                blob[pos:], mloc.child(f"[@{pos}]"), depth + 1, name=member, read_as="pickle"
            )
            return
        end, glob = found
        ctx.scan_blob(
            blob[pos:end],
            mloc.child(f"[pickle @{pos}]"),
            depth + 1,
            name="pickle",
            read_as="pickle",
        )
        pieces += 1
        if pieces > ctx.limits.max_entries:
            ctx.limit("entries", f"legacy {member} stream holds too many records", mloc)
            return
        pos = end
        if pieces == 1:
            continue  # the count pickle
        if member == "storages":
            elem = _ELEMENT_SIZE.get(glob.rsplit(" ", 1)[-1])
            if elem is None or pos + 8 > len(blob):
                continue  # the storage-views pickle (or a record torch would reject)
            (numel,) = struct.unpack_from("<q", blob, pos)
            pos += 8 + max(0, numel) * elem
        else:
            if pos + 8 > len(blob):
                continue
            (ndim,) = struct.unpack_from("<i", blob, pos)
            pos += 8 + 16 * max(0, ndim) + 8


def _malformed(ctx: ScanContext, loc: Location, message: str, severity: Severity) -> None:
    ctx.add(
        severity,
        "archive.malformed",
        message,
        loc,
        why="tar readers disagree on damaged archives; every member found was scanned",
    )
