"""A crate as one reproducible tar file: export from the store, import into it.

Export writes the crate's files (exactly those the manifest accounts for) in sorted order with
fixed metadata: mtime ``SOURCE_DATE_EPOCH`` or 0, uid/gid 0, no user or group names, modes
0644/0755. The same crate always gives the same bytes (``.tar.gz``/``.tgz`` too: gzip with no
name and mtime 0).

Import checks every member header before touching the store (regular files and folders only,
no absolute paths, no ``..``, no links or devices, only crate files), extracts into a staging
folder inside the store, verifies every sha256 and the version digest, and only then commits.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from modelcrate._epoch import source_date_epoch
from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.layout import MODEL_DIR, SIDE_FILES, crate_files, verify_crate
from modelcrate.crate.store import Committed, CrateRecord, Store, store_error
from modelcrate.errors import InputError

MAX_MEMBERS = 1_000
MAX_MEMBER_BYTES = 16 * 1024**3
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Exported:
    record: CrateRecord
    path: Path
    sha256: str
    size: int


def export_crate(store: Store, ref: str, tar_path: Path | str) -> Exported:
    """Write crate ``ref`` to ``tar_path`` (atomically); verifies the crate first."""
    record = store.get(ref)
    crate_dir = store.resolve(ref)
    manifest = verify_crate(crate_dir)
    out = Path(tar_path)
    mtime = source_date_epoch()
    compress = out.name.endswith((".gz", ".tgz"))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise InputError(
            f"cannot write the export: {exc.strerror or exc}",
            path=str(out),
            hint="check that the folder exists and is writable",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            with (
                _maybe_gzip(raw, compress) as sink,
                tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name in _with_parents(crate_files(manifest, crate_dir)):
                    src = crate_dir / name
                    info = tarfile.TarInfo(name)
                    info.mtime = mtime
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if name.endswith("/"):
                        info.name = name.rstrip("/")
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tar.addfile(info)
                        continue
                    info.mode = 0o644
                    info.size = src.stat().st_size
                    with open(src, "rb") as fh:
                        tar.addfile(info, fh)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(
                f"cannot write the export: {exc.strerror or exc}",
                path=str(out),
                hint="check free space and permissions of the destination",
            ) from exc
        raise
    with open(out, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return Exported(record, out, digest, out.stat().st_size)


def import_crate(store: Store, tar_path: Path | str) -> Committed:
    """Import a crate archive into ``store``; refuses anything unsafe or inconsistent."""
    src = Path(tar_path)
    if not src.is_file():
        raise InputError(
            "no such crate archive", path=str(src), hint="pass a .tar made by 'modelcrate export'"
        )
    store.preflight()
    with _open_tar(src) as tar:
        members = _checked_members(tar, src)
        with store.staging() as stage:
            try:
                for member, name in members:
                    if member.isdir():
                        (stage / name).mkdir(parents=True, exist_ok=True)
                        continue
                    _extract(tar, member, stage / name, src)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise _unreadable(src, exc) from exc
            except OSError as exc:
                raise store_error(store.root, exc) from exc
            try:
                manifest = verify_crate(stage)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"refusing the archive: {exc.message}",
                    path=str(src),
                    hint="the archive was modified or corrupted after export; "
                    "get a fresh copy from its source",
                ) from exc
            except InputError as exc:
                raise IntegrityError(
                    f"refusing the archive: {exc.message}",
                    path=str(src),
                    hint="pass a crate archive made by 'modelcrate export'",
                ) from exc
            names = {name for member, name in members if member.isfile()}
            extra = sorted(names - set(crate_files(manifest)))
            if extra:
                raise IntegrityError(
                    f"refusing the archive: it holds files the manifest does not list ({extra[0]})",
                    path=str(src),
                    hint="the archive was modified after export; get a fresh copy from its source",
                )
            return store.commit(stage, manifest)


def _checked_members(tar: tarfile.TarFile, src: Path) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member, validated before anything is written."""
    out: list[tuple[tarfile.TarInfo, str]] = []
    seen: set[str] = set()
    try:
        for member in tar:
            if len(out) >= MAX_MEMBERS:
                raise IntegrityError(
                    f"refusing the archive: more than {MAX_MEMBERS} members",
                    path=str(src),
                    hint="a crate archive holds a handful of files",
                )
            name = _safe_name(member, src)
            if name in seen:
                raise IntegrityError(
                    f"refusing the archive: member {name!r} appears twice",
                    path=str(src),
                    hint="the archive was modified after export; get a fresh copy from its source",
                )
            seen.add(name)
            out.append((member, name))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise _unreadable(src, exc) from exc
    if not out:
        raise _unreadable(src, ValueError("empty archive"))
    return out


def _safe_name(member: tarfile.TarInfo, src: Path) -> str:
    raw = member.name
    name = raw.removeprefix("./").rstrip("/")
    parts = name.split("/")
    kind = "file" if member.isfile() else "folder" if member.isdir() else None
    problem = None
    if kind is None:
        what = "a link" if member.issym() or member.islnk() else "a special file"
        problem = f"member {raw!r} is {what}; crates hold regular files only"
    elif raw.startswith("/") or "\\" in raw or "\x00" in raw or not name:
        problem = f"member {raw!r} has an absolute or malformed path"
    elif any(p in ("", ".", "..") for p in parts):
        problem = f"member {raw!r} escapes the crate folder"
    elif not (name in SIDE_FILES or name == MODEL_DIR or name.startswith(MODEL_DIR + "/")):
        problem = f"member {raw!r} is not a crate file"
    elif kind == "folder" and name in SIDE_FILES:
        problem = f"member {raw!r} should be a file"
    elif kind == "file" and name == MODEL_DIR:
        problem = f"member {raw!r} should be a folder"
    elif member.size > MAX_MEMBER_BYTES:
        problem = f"member {raw!r} is larger than {MAX_MEMBER_BYTES} bytes"
    if problem:
        raise IntegrityError(
            f"refusing the archive: {problem}",
            path=str(src),
            hint="import only archives made by 'modelcrate export' from a source you trust",
        )
    return name


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, src: Path) -> None:
    fh = tar.extractfile(member)
    if fh is None:  # pragma: no cover (only regular files reach here)
        raise _unreadable(src, ValueError(f"cannot read member {member.name!r}"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    remaining = member.size
    with fh, open(dest, "xb") as out:
        while remaining > 0:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                raise _unreadable(src, EOFError(f"member {member.name!r} is truncated"))
            out.write(chunk)
            remaining -= len(chunk)


@contextlib.contextmanager
def _open_tar(src: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(src, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise _unreadable(src, exc) from exc
    with tar:
        yield tar


def _unreadable(src: Path, exc: BaseException) -> IntegrityError:
    return IntegrityError(
        f"refusing the archive: it is not a readable crate archive ({exc})",
        path=str(src),
        hint="the file is corrupt or truncated; export the crate again",
    )


@contextlib.contextmanager
def _maybe_gzip(raw: IO[bytes], compress: bool) -> Iterator[IO[bytes]]:
    if not compress:
        yield raw
        return
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        yield gz  # type: ignore[misc]


def _with_parents(files: list[str]) -> list[str]:
    """Files plus their parent folders (as ``dir/``), sorted so folders come first."""
    dirs = {"/".join(f.split("/")[:i]) + "/" for f in files for i in range(1, f.count("/") + 1)}
    return sorted([*files, *dirs])
