"""Zip archives (PyTorch, TorchScript, Keras, .npz, skops, plain zip): every member scanned.

Members are read with :mod:`modelcrate.scan.zipreader`, which accepts what PyTorch accepts and
never lets one broken entry stop the others. The member's *content* decides how it is scanned
(a pickle named ``data.txt`` is a pickle), with one exception: the raw tensor storages of a
PyTorch archive are never read.
"""

from __future__ import annotations

import bz2
import itertools
import lzma
import re
import stat
import struct
import zlib
from collections import Counter
from collections.abc import Callable

from modelcrate.scan.archive_links import LinkChecker
from modelcrate.scan.compressed import Decoder, ZlibDecoder, bounded_decompress
from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.zipreader import (
    FLAG_ENCRYPTED,
    FLAG_PATCHED,
    FLAG_STRONG_ENCRYPTION,
    Directory,
    LocalHeader,
    ZipEntry,
    read_directory,
    read_local,
)

_TORCH_PICKLE = re.compile(r"([^/]+)/data\.pkl")
_TORCHSCRIPT = re.compile(r"([^/]+)/(?:code/|constants\.pkl$)")
# Raw tensor bytes of a PyTorch/TorchScript archive. torch maps them straight into storages
# (persistent ids name them) and never unpickles them, so their content cannot run code; reading
# them would make a 1 GB checkpoint cost 1 GB of I/O and report noise when a float blob happens
# to start like a pickle (THREATS.md section 4, item 2). Only their names are checked.
_STORAGE = re.compile(r"([^/]+)/(?:data|constants)/\d+")
# TorchScript builtins that reach the file system or load native code when the model runs.
_TS_DANGEROUS = re.compile(
    rb"\b(?:torch\.(?:ops\.aten\.)?(?:from_file|save|load)|ops\.load_library"
    rb"|torch\.classes\.load_library|_load_for_mobile|__import__)\b"
)
_DRIVE = re.compile(r"^[A-Za-z]:")
_SYMLINK_READ = 4096
_METHOD_NAMES = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd"}


def name_problem(name: str) -> str | None:
    """Why extracting a member called ``name`` would escape the target folder, or None."""
    if "\x00" in name:
        return "contains a NUL byte"
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(norm):
        return "starts with a drive letter"
    if ".." in norm.split("/"):
        return "climbs out of the extraction folder with '..'"
    return None


def link_escapes(member: str, target: str) -> bool:
    """True when a link ``member -> target`` resolves outside the extraction folder."""
    norm = target.replace("\\", "/")
    if not norm or norm.startswith("/") or _DRIVE.match(norm):
        return True
    parts = member.replace("\\", "/").split("/")[:-1]
    for part in norm.split("/"):
        if part == "..":
            if not parts:
                return True
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return False


def report_link(
    ctx: ScanContext,
    mloc: Location,
    target: str,
    *,
    escapes: bool,
    kind: str = "symbolic",
    detail: str = "",
) -> None:
    """Report a link member (shared with the tar and 7z scanners): HIGH when it escapes."""
    inside = Severity.MEDIUM if kind == "symbolic" else Severity.LOW
    ctx.add(
        Severity.HIGH if escapes else inside,
        "archive.symlink",
        f"member is a {kind} link to {target!r}"
        + (", outside the extraction folder" if escapes else "")
        + detail,
        mloc,
        why="extracting it lets later writes or reads reach files the model should not touch",
        symbol=target,
    )


def report_name(ctx: ScanContext, name: str, loc: Location) -> None:
    """Report a traversal-prone member name (shared with the tar and 7z scanners)."""
    problem = name_problem(name)
    if problem is not None:
        ctx.add(
            Severity.HIGH,
            "archive.path-traversal",
            f"member name {name!r} {problem}",
            loc,
            why="extracting the archive (Keras assets, .nemo/.mar tools, scanners) writes "
            "outside the target folder (zip slip)",
            symbol=name,
        )


def _flavour(names: list[str]) -> tuple[str, set[str]]:
    """The archive kind and, for PyTorch archives, the root folders holding ``data.pkl``."""
    roots = {m.group(1) for n in names if (m := _TORCH_PICKLE.fullmatch(n))}
    script = {m.group(1) for n in names if (m := _TORCHSCRIPT.match(n))}
    files = [n for n in names if not n.endswith("/")]
    if script:
        return "torchscript", roots | script
    if roots:
        return "pytorch-zip", roots
    if "config.json" in names and "metadata.json" in names:
        return "keras", set()
    if "schema.json" in names:
        return "skops", set()
    if files and all(n.endswith(".npy") for n in files):
        return "npz", set()
    return "zip", set()


def _decoder(method: int) -> Callable[[], Decoder] | None:
    if method == 8:
        return lambda: ZlibDecoder(-15)
    if method == 12:
        return bz2.BZ2Decompressor
    return None


def _lzma_decoder(data: Blob, start: int) -> tuple[Callable[[], Decoder], int] | None:
    """Zip method 14: 2-byte version, 2-byte properties size, LZMA1 properties, raw stream."""
    head = bytes(data[start : start + 9])
    if len(head) < 9:
        return None
    (psize,) = struct.unpack_from("<H", head, 2)
    if psize != 5 or head[4] >= 9 * 5 * 5:
        return None
    d = head[4]
    (dict_size,) = struct.unpack_from("<I", head, 5)
    lc, lp, pb = d % 9, (d // 9) % 5, d // 45
    filt = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}
    return (lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])), 9


def scan_zip(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan every member of a zip; return ``pytorch-zip``, ``torchscript``, ``keras``, ..."""
    lim = ctx.limits
    directory = read_directory(data, lim.max_entries)
    for offset, problem in directory.problems:
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            problem,
            loc.at(offset),
            why="loaders disagree on such archives; every member that could be found was scanned",
        )
    if directory.declared_count > lim.max_entries or len(directory.entries) >= lim.max_entries:
        ctx.limit(
            "entries",
            f"archive declares {directory.declared_count} members, over the limit of "
            f"{lim.max_entries}; only the first {len(directory.entries)} were scanned",
            loc,
        )
    ctx.entries += len(directory.entries)
    names = [e.name for e in directory.entries]
    flavour, roots = _flavour(names)
    if directory.prefix_bytes:
        _scan_prefix(data, directory, loc, ctx, depth)
    locals_ = _check_layout(data, directory, loc, ctx)
    counts = Counter(names)
    for name, count in sorted((n, c) for n, c in counts.items() if c > 1)[:20]:
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            f"member name {name!r} appears {count} times",
            loc,
            why="readers pick different copies; every copy was scanned",
        )
    if flavour == "torchscript":
        code = [n for n in names if "/code/" in n and n.endswith(".py")]
        ctx.add(
            Severity.HIGH if code else Severity.MEDIUM,
            "torch.torchscript",
            f"TorchScript archive with {len(code)} code file(s): executable content run by "
            "torch.jit.load (and by torch.load in torch <= 2.5.1, CVE-2025-32434)",
            loc,
            why="TorchScript code runs when the model is loaded and called; review its source, "
            "then admit your own models with a policy rule override that gives the reason",
        )
    torchscript_roots = {
        n.split("/", 1)[0] for n in names if flavour == "torchscript" and _is_constants(n)
    }
    links = LinkChecker(ctx, loc)
    for entry in directory.entries:
        mloc = loc.child(entry.name)
        report_name(ctx, entry.name, loc.at(entry.record_offset))
        if entry.is_dir:
            links.member(entry.name, "dir", mloc)
            continue
        local = locals_.get(entry.index)
        if local is None or not stat.S_ISLNK(entry.unix_mode):
            links.member(entry.name, "file", mloc)
        storage = _STORAGE.fullmatch(entry.name)
        if storage and storage.group(1) in roots:
            continue  # raw tensor bytes: never read (see _STORAGE)
        if local is None:
            continue  # reported by _check_layout
        # In a real TorchScript archive (constants.pkl present: what torch.load checks before
        # handing the file to torch.jit.load) TorchScript's C++ unpickler reads every pickle.
        script = bool(torchscript_roots) and entry.name.split("/", 1)[0] in torchscript_roots
        try:
            with ctx.pickle_dialect_set("torchscript" if script else None):
                _scan_entry(data, entry, local, mloc=mloc, ctx=ctx, depth=depth, links=links)
        except (ValueError, IndexError, struct.error, MemoryError) as exc:
            ctx.add(
                Severity.HIGH,
                "archive.malformed",
                f"member could not be read: {type(exc).__name__}: {exc}",
                mloc,
                why="this member was not verified; the other members were still scanned",
            )
    links.finish()
    return flavour


def _scan_prefix(
    data: Blob, directory: Directory, loc: Location, ctx: ScanContext, depth: int
) -> None:
    n = directory.prefix_bytes
    ctx.add(
        Severity.LOW,
        "archive.malformed",
        f"{n} bytes before the first zip member (self-extractor stub or polyglot file)",
        loc.at(0),
        why="another loader may read the file from its start; those bytes were scanned too",
    )
    if set(ctx.blob_formats) - {"zip"}:
        return  # the whole file is already analysed from byte 0 as its other formats
    if n > ctx.limits.max_member_bytes:
        ctx.not_scanned(
            f"{n} bytes before the first zip member exceed the {ctx.limits.max_member_bytes}-byte "
            "member limit and were not scanned",
            loc.at(0),
        )
        return
    ctx.scan_blob(bytes(data[:n]), loc.child("[prefix]"), depth + 1, name="prefix")


def _check_layout(
    data: Blob, directory: Directory, loc: Location, ctx: ScanContext
) -> dict[int, LocalHeader]:
    """Read every local header once; report missing headers, mismatches and overlaps."""
    found: dict[int, LocalHeader] = {}
    by_offset: dict[int, int] = {}
    spans: list[tuple[int, int, int]] = []
    shared = 0
    for entry in directory.entries:
        local = read_local(data, entry)
        if local is None:
            ctx.add(
                Severity.MEDIUM,
                "archive.malformed",
                f"member {entry.name!r} points at offset {entry.local_offset}, where there is no "
                "local header",
                loc.at(entry.record_offset),
                why="no loader can read this member; the others were scanned",
            )
            continue
        if local.offset in by_offset:
            shared += 1
            continue  # same data as an earlier entry: scanned once
        by_offset[local.offset] = entry.index
        found[entry.index] = local
        spans.append((local.offset, local.data_start + entry.compressed_size, entry.index))
        if local.raw_name != entry.raw_name:
            ctx.add(
                Severity.MEDIUM,
                "archive.malformed",
                f"local header names the member {local.raw_name[:200]!r}, the central directory "
                f"{entry.raw_name[:200]!r}",
                loc.at(local.offset),
                why="zipfile refuses such archives while PyTorch loads them; the member was "
                "scanned under its central-directory name",
                symbol=entry.name,
            )
    spans.sort()
    overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    if shared or overlapping:
        ctx.add(
            Severity.HIGH,
            "archive.bomb",
            f"{shared + overlapping} member(s) overlap the data of another member "
            "(overlapping-entry zip bomb)",
            loc,
            why="overlapping entries multiply the extracted size without recursion; shared "
            "data was scanned once",
        )
    return found


def _scan_entry(
    data: Blob,
    entry: ZipEntry,
    local: LocalHeader,
    *,
    mloc: Location,
    ctx: ScanContext,
    depth: int,
    links: LinkChecker,
) -> None:
    lim = ctx.limits
    start, end = local.data_start, local.data_start + entry.compressed_size
    if end > len(data):
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            f"member data runs {end - len(data)} bytes past the end of the file",
            mloc,
            why="the archive is truncated; the bytes present were scanned",
        )
        end = len(data)
    flags = entry.flags | local.flags
    crypt = flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)
    sealed = crypt and entry.method == 0 and entry.compressed_size == entry.size + 12
    if entry.method == 99 or sealed:
        _encrypted(ctx, mloc, entry)
        return
    if flags & (FLAG_ENCRYPTED | FLAG_PATCHED | FLAG_STRONG_ENCRYPTION):
        ctx.add(
            Severity.MEDIUM,
            "archive.malformed",
            f"flag bits {flags & 0x61:#x} set that PyTorch ignores (encrypted/patched); the "
            "member was read as plain data",
            mloc,
            why="zipfile-based scanners skip such members while torch.load reads them "
            "(CVE-2025-1945)",
        )
    if stat.S_ISLNK(entry.unix_mode):
        _symlink(data, entry, (start, end), mloc, links)
        return
    if entry.method == 0:
        if end - start > lim.max_member_bytes:
            ctx.not_scanned(
                f"member of {end - start} bytes is over the {lim.max_member_bytes}-byte limit "
                "and was not scanned",
                mloc,
            )
            return
        content = bytes(data[start:end])
    else:
        factory = _decoder(entry.method)
        if entry.method == 14 and (lz := _lzma_decoder(data, start)) is not None:
            factory, skip = lz
            start += skip
        if factory is None:
            method = _METHOD_NAMES.get(entry.method, str(entry.method))
            ctx.add(
                Severity.HIGH,
                "archive.unsupported",
                f"member compressed with method {method}, which the scanner cannot open",
                mloc,
                why="its content was not verified; repack the archive with deflate",
            )
            return
        result = bounded_decompress(data, start, end, make_decoder=factory, ctx=ctx, loc=mloc)
        if result.error is not None and crypt:
            _encrypted(ctx, mloc, entry)
            return
        if result.error is not None or not (result.complete or result.stopped):
            ctx.add(
                Severity.MEDIUM,
                "archive.malformed",
                f"compressed member is corrupt or truncated after {len(result.data)} bytes "
                f"({result.error or 'no end of stream'}); the decompressed part was scanned",
                mloc,
                why="loaders fail on it, but a streaming reader may act on the prefix",
            )
        content = result.data
    if "/code/" in entry.name and entry.name.endswith(".py"):
        _check_torchscript_code(content, mloc, ctx)
    ctx.scan_blob(content, mloc, depth + 1, name=entry.name)


def _encrypted(ctx: ScanContext, mloc: Location, entry: ZipEntry) -> None:
    ctx.add(
        Severity.HIGH,
        "archive.encrypted",
        f"member is encrypted (flags {entry.flags:#x}, method {entry.method}) and cannot be read",
        mloc,
        why="its content cannot be verified; ship models unencrypted",
    )


def _symlink(
    data: Blob, entry: ZipEntry, span: tuple[int, int], mloc: Location, links: LinkChecker
) -> None:
    """A link stored as a member whose Unix mode says S_IFLNK: its data is the target."""
    start, end = span
    raw = bytes(data[start : min(end, start + _SYMLINK_READ)])
    if entry.method == 8:
        try:
            raw = ZlibDecoder(-15).decompress(raw, _SYMLINK_READ)
        except zlib.error:
            raw = b""
    target = raw.decode("utf-8", "replace")
    links.member(entry.name, "symlink", mloc, target)


def _check_torchscript_code(code: bytes, mloc: Location, ctx: ScanContext) -> None:
    """Report TorchScript source that calls file or native-library builtins."""
    seen: set[bytes] = set()
    for m in _TS_DANGEROUS.finditer(code):
        call = m.group(0)
        if call in seen:
            continue
        seen.add(call)
        ctx.add(
            Severity.HIGH if code else Severity.MEDIUM,
            "torch.torchscript",
            f"TorchScript code calls {call.decode()}, which reads/writes files or loads native "
            "code when the model runs",
            mloc.at(m.start()),
            why="a model's forward pass has no reason to touch the file system",
            symbol=call.decode(),
        )


def _is_constants(name: str) -> bool:
    return name.count("/") == 1 and name.endswith("/constants.pkl")
