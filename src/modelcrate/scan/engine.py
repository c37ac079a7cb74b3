"""Scan files and directories: walk, map each file read-only, sniff, dispatch, collect."""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelcrate.errors import InputError
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import FileReport, Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.policy import Policy
from modelcrate.scan.report import ScanReport


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    compute_hash: bool = False,
) -> ScanReport:
    """Scan model files and folders statically. Nothing in them is imported or executed.

    Raises :class:`~modelcrate.errors.InputError` when a path does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists() and not root.is_symlink():
            raise InputError(
                "no such file or directory", path=str(root), hint="check the path and try again"
            )
    policy = policy or Policy()
    limits = limits or Limits()
    report = ScanReport()
    start = time.perf_counter()
    for root in roots:
        for file, escape in _walk(root, limits):
            if escape == _LIMIT:
                fr = FileReport(str(file), 0, "folder", None)
                ScanContext(limits, policy, fr.findings).limit(
                    "files",
                    f"the folder holds more than {limits.max_file_list} files; the walk stopped "
                    "there and the rest were not scanned",
                    Location(str(file)),
                )
                report.files.append(fr)
                continue
            if escape is not None:
                fr = FileReport(str(file), 0, "symlink", None)
                ctx = ScanContext(limits, policy, fr.findings)
                ctx.add(
                    Severity.HIGH,
                    "path.symlink-escape",
                    f"symbolic link points outside the scanned folder, to {escape}",
                    Location(str(file)),
                    why="a loader following it reads files the model should not reach",
                )
                report.files.append(fr)
                continue
            report.files.append(
                scan_file(file, policy=policy, limits=limits, compute_hash=compute_hash)
            )
    report.seconds = time.perf_counter() - start
    return report


_LIMIT = "\x00limit"  # yielded by _walk (with the folder) when the file limit stops it


def _walk(root: Path, limits: Limits) -> Iterator[tuple[Path, str | None]]:
    """Files under ``root`` in a stable order; symlinks that escape it are yielded with target.

    Past ``limits.max_file_list`` files it yields ``(root, _LIMIT)`` and stops.
    """
    if not root.is_dir():
        yield root, None
        return
    real_root = root.resolve()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + sorted(
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ):
            p = Path(dirpath) / name
            count += 1
            if count > limits.max_file_list:
                yield root, _LIMIT
                return
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    yield p, str(os.readlink(p))
                    continue
                if target.is_dir():
                    continue  # scanned where it really lives
            yield p, None


def scan_file(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    compute_hash: bool = False,
) -> FileReport:
    """Scan one file. The file is memory-mapped: bytes a format never needs are never read."""
    p = Path(path)
    ctx = ScanContext(limits or Limits(), policy or Policy())
    loc = Location(str(p))
    start = time.perf_counter()
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        ctx.add(Severity.HIGH, "scan.unreadable", f"cannot read file: {exc.strerror}", loc)
        return FileReport(str(p), 0, "unreadable", None, ctx.findings)
    with contextlib.closing(os.fdopen(fd, "rb")) as fh:
        size = os.fstat(fh.fileno()).st_size
        data: bytes | mmap.mmap = (
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
        )
        try:
            fmt = _scan_guarded(ctx, data, loc)
            digest = None
            if compute_hash:
                import hashlib

                digest = hashlib.sha256(data).hexdigest()
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    return FileReport(str(p), size, fmt, digest, ctx.findings, time.perf_counter() - start)


def _scan_guarded(ctx: ScanContext, data: bytes | mmap.mmap, loc: Location) -> str:
    """Run the scanners; an unexpected error is a finding (fail closed), never a crash."""
    try:
        return ctx.scan_blob(data, loc, 0)
    except MemoryError:
        ctx.limit("memory", "ran out of memory while scanning", loc)
        return "error"
    except RecursionError:
        ctx.limit("recursion", "input nested too deeply for the scanner", loc)
        return "error"
    except Exception as exc:  # a scanner bug must not let a file through
        ctx.add(
            Severity.HIGH,
            "scan.error",
            f"scanner error: {type(exc).__name__}: {exc}",
            loc,
            why="the file could not be fully verified, so it is not admitted",
        )
        return "error"
