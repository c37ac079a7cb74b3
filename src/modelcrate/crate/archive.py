"""A crate as one reproducible tar file: export from the store, import into it.

Export writes the crate's files (exactly those the manifest accounts for) in sorted order with
fixed metadata: mtime ``SOURCE_DATE_EPOCH`` or 0, uid/gid 0, no user or group names, modes
0644/0755. The same crate always gives the same bytes (``.tar.gz``/``.tgz`` too: gzip with no
name and mtime 0).

Import trusts nothing the archive says about itself until it is checked, and writes nothing
it has not checked first:

1. every member header (no single read of the archive larger than :data:`MAX_READ_BYTES`, so
   a pax header declaring gigabytes is refused, not read): regular files and folders only (no
   links, devices or sparse files), no absolute paths or ``..``, no name twice, at most
   :data:`MAX_MEMBERS`, and the sizes they declare within the import limit (``max_bytes``,
   :data:`DEFAULT_MAX_IMPORT_BYTES` by default);
2. ``crate.yaml`` (bounded), whose version must be the digest of its content (and the version
   the caller expects, with ``expect``);
3. every member against it: exactly the files it lists and their folders, each artifact exactly
   as large as declared, the side files within fixed bounds; and room on the store's disk;
4. then each member is streamed into a staging folder inside the store, never past the size
   crate.yaml allows, hashed on the way and compared with the manifest's sha256;
5. the whole crate is verified (:func:`~modelcrate.crate.layout.verify_crate`), and the model
   files go through the build's gate again (:func:`modelcrate.crate.gate.gate`): the scanner,
   the formats crate.yaml declares, and for skops models the allowlist (never the crate's own
   trust list);
6. only then is the staging folder renamed into the store and indexed. Any failure removes it.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from modelcrate._epoch import source_date_epoch
from modelcrate.crate.canonical import MANIFEST_NAME
from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.layout import (
    LOCK_FILE,
    MODEL_DIR,
    SBOM_FILE,
    SIDE_FILES,
    crate_files,
    verify_crate,
)
from modelcrate.crate.store import Committed, CrateRecord, Store, store_error, write_file
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import Manifest
    from modelcrate.scan import Policy

MAX_MEMBERS = 1_000
DEFAULT_MAX_IMPORT_BYTES = 64 * 1024**3  # all members together; modelcrate import --max-size
MAX_MANIFEST_BYTES = 4 * 1024**2
MAX_SIDE_FILE_BYTES = 256 * 1024**2  # the lock, scan report, signature and SBOM, each
MAX_READ_BYTES = 16 * 1024**2  # any one read from the archive: a header, a chunk, crate.yaml
_CHUNK = 1 << 20
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


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


def import_crate(
    store: Store,
    tar_path: Path | str,
    *,
    max_bytes: int | None = None,
    policy: Policy | None = None,
    expect: str | None = None,
) -> Committed:
    """Import a crate archive into ``store``; refuses anything unsafe or inconsistent.

    ``max_bytes``: the most the archive may unpack to (default :data:`DEFAULT_MAX_IMPORT_BYTES`).
    ``policy``: the scan policy of the gate that re-scans the model files (as ``build``'s).
    ``expect``: the version (a digest or a prefix of one) the caller expects, e.g. as published
    by the crate's author: the archive's own digests prove it is intact, not whose it is.
    """
    src = Path(tar_path)
    limit = DEFAULT_MAX_IMPORT_BYTES if max_bytes is None else max_bytes
    if limit < 1:
        raise InputError(
            f"the import size limit must be positive (got {limit})", hint="e.g. --max-size 64GiB"
        )
    if not src.is_file():
        raise InputError(
            "no such crate archive", path=str(src), hint="pass a .tar made by 'modelcrate export'"
        )
    store.preflight()
    with _open_tar(src) as tar:
        members = _checked_members(tar, src, limit)
        manifest, manifest_bytes = _read_manifest(tar, members, src)
        if expect is not None:
            _check_expected(manifest, expect, src)
        plan = _plan(manifest, members, src)
        store.check_space(sum(member.size for member, _ in members))
        with store.staging() as stage:
            try:
                for member, name in members:
                    if member.isdir():
                        (stage / name).mkdir(parents=True, exist_ok=True)
                    elif name == MANIFEST_NAME:
                        write_file(stage / name, manifest_bytes)
                    else:
                        _extract(tar, member, stage / name, src, plan[name])
            except _TAR_ERRORS as exc:
                raise _unreadable(src, exc) from exc
            except OSError as exc:
                raise store_error(store.root, exc) from exc
            try:
                verify_crate(stage, manifest)
            except InputError as exc:  # IntegrityError included
                raise IntegrityError(
                    f"refusing the archive: {exc.message}",
                    path=str(src),
                    hint="the archive was modified or corrupted after export; "
                    "get a fresh copy from its source",
                ) from exc
            from modelcrate.crate.gate import gate

            gate(stage, manifest, source=str(src), policy=policy)
            return store.commit(stage, manifest)


@dataclass(frozen=True)
class _Expected:
    """What crate.yaml allows for one file of the archive: the most bytes it may have, and its
    exact size and sha256 where the manifest records them."""

    limit: int
    size: int | None = None
    sha256: str | None = None


def _read_manifest(
    tar: tarfile.TarFile, members: list[tuple[tarfile.TarInfo, str]], src: Path
) -> tuple[Manifest, bytes]:
    """crate.yaml, read (bounded) before anything is written; its version must be its digest."""
    from modelcrate.crate.manifest import parse_manifest

    found = [m for m, name in members if name == MANIFEST_NAME and m.isfile()]
    if not found:
        raise _refused(src, "crate.yaml is missing")
    member = found[0]
    if member.size > MAX_MANIFEST_BYTES:
        raise _refused(src, f"crate.yaml is {member.size} bytes (at most {MAX_MANIFEST_BYTES})")
    try:
        fh = tar.extractfile(member)
        data = fh.read(MAX_MANIFEST_BYTES + 1) if fh is not None else b""
    except (*_TAR_ERRORS, OSError) as exc:
        raise _unreadable(src, exc) from exc
    if len(data) != member.size:
        raise _unreadable(src, EOFError("crate.yaml is truncated"))
    try:
        manifest = parse_manifest(data, path=MANIFEST_NAME)
    except InputError as exc:
        raise _refused(src, exc.message) from exc
    if manifest.compute_version() != manifest.version:
        raise IntegrityError(
            "refusing the archive: crate.yaml does not match its version digest "
            "(it was modified after the build)",
            path=str(src),
            hint="the archive was modified or corrupted after export; "
            "get a fresh copy from its source",
        )
    return manifest, data


def _check_expected(manifest: Manifest, expect: str, src: Path) -> None:
    wanted = expect.strip().lower().removeprefix("sha256:")
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise InputError(
            f"{expect!r} is not a version digest",
            hint="pass the crate version (sha256:...) or a hex prefix of it",
        )
    if not manifest.version.removeprefix("sha256:").startswith(wanted):
        raise IntegrityError(
            f"refusing the archive: it holds {manifest.name}:{manifest.short_version} "
            f"({manifest.version}), not the expected version {expect}",
            path=str(src),
            hint="get the archive from the crate's source again, or check the version you expect",
        )


def _plan(
    manifest: Manifest, members: list[tuple[tarfile.TarInfo, str]], src: Path
) -> dict[str, _Expected]:
    """Every member checked against crate.yaml before a byte is written: exactly the files it
    lists (the SBOM may be absent: crates made before SBOMs), the folders above them, and each
    artifact exactly as large as declared."""
    expected: dict[str, _Expected] = {
        name: _Expected(MAX_SIDE_FILE_BYTES) for name in SIDE_FILES if name != MANIFEST_NAME
    }
    expected[LOCK_FILE] = _Expected(MAX_SIDE_FILE_BYTES, sha256=manifest.lock_sha256)
    for art in manifest.artifacts:
        expected[art.path] = _Expected(art.size, art.size, art.sha256)
    files = {name: m for m, name in members if m.isfile()}
    extra = sorted(set(files) - set(expected) - {MANIFEST_NAME})
    if extra:
        raise _refused(src, f"it holds files the manifest does not list ({extra[0]})")
    missing = sorted(set(expected) - set(files) - {SBOM_FILE})
    if missing:
        raise _refused(src, f"{missing[0]}, listed in crate.yaml, is missing")
    parents = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    stray = sorted(name for m, name in members if m.isdir() and name not in parents)
    if stray:
        raise _refused(src, f"folder {stray[0]!r} holds no file the manifest lists")
    for name, member in sorted(files.items()):
        want = expected.get(name)
        if want is None:
            continue
        if want.size is not None and member.size != want.size:
            raise _refused(
                src, f"member {name!r} is {member.size} bytes but crate.yaml declares {want.size}"
            )
        if member.size > want.limit:
            raise _refused(src, f"member {name!r} is {member.size} bytes (at most {want.limit})")
    return expected


def _checked_members(
    tar: tarfile.TarFile, src: Path, limit: int
) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member header, validated before anything is written: names, kinds, count, and the
    sizes they declare against ``limit`` (their total)."""
    out: list[tuple[tarfile.TarInfo, str]] = []
    seen: set[str] = set()
    total = 0
    try:
        for member in tar:
            if len(out) >= MAX_MEMBERS:
                raise _refused(
                    src, f"more than {MAX_MEMBERS} members (a crate holds a handful of files)"
                )
            name = _safe_name(member, src)
            total += member.size
            if total > limit:
                raise IntegrityError(
                    f"refusing the archive: it unpacks to more than the import limit of "
                    f"{limit} bytes (member {name!r} declares {member.size} bytes)",
                    path=str(src),
                    hint="raise the limit (modelcrate import --max-size) only for a crate you "
                    "expect to be that large",
                )
            if name in seen:
                raise IntegrityError(
                    f"refusing the archive: member {name!r} appears twice",
                    path=str(src),
                    hint="the archive was modified after export; get a fresh copy from its source",
                )
            seen.add(name)
            out.append((member, name))
    except (*_TAR_ERRORS, OSError) as exc:
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
    elif member.sparse is not None or member.type == tarfile.GNUTYPE_SPARSE:
        problem = f"member {raw!r} is a sparse file; crates hold regular files only"
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
    if problem:
        raise _refused(src, problem)
    return name


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, src: Path, want: _Expected
) -> None:
    """Stream one member to ``dest``: never more than crate.yaml allows, hashed on the way and
    compared with the manifest's sha256 (the staging folder goes away on any failure)."""
    fh = tar.extractfile(member)
    if fh is None:  # pragma: no cover (only regular files reach here)
        raise _unreadable(src, ValueError(f"cannot read member {member.name!r}"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    written = 0
    with fh, open(dest, "xb") as out:
        while True:
            chunk = fh.read(min(_CHUNK, want.limit + 1 - written))
            if not chunk:
                break
            written += len(chunk)
            if written > want.limit:
                raise _refused(src, f"member {member.name!r} is larger than crate.yaml allows")
            sha.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if written != member.size:
        raise _unreadable(src, EOFError(f"member {member.name!r} is truncated"))
    if want.sha256 is not None and sha.hexdigest() != want.sha256:
        raise IntegrityError(
            f"refusing the archive: {member.name} does not match the sha256 recorded in "
            "crate.yaml (tampered or corrupt)",
            path=str(src),
            hint="the archive was modified or corrupted after export; "
            "get a fresh copy from its source",
        )


@contextlib.contextmanager
def _open_tar(src: Path) -> Iterator[tarfile.TarFile]:
    """The archive (plain, gzip, bzip2 or xz), read through :class:`_Bounded`: tarfile reads a
    pax or GNU long-name header whole, whatever size it declares, before anything else here
    sees it; no single read may exceed :data:`MAX_READ_BYTES`."""
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(open(src, "rb"))
            magic = raw.read(6)
            raw.seek(0)
            stream = cast("IO[bytes]", stack.enter_context(_decompressed(raw, magic)))
            bounded = _Bounded(stream, src)
            tar = stack.enter_context(tarfile.open(fileobj=bounded, mode="r:"))  # type: ignore[call-overload]
        except IntegrityError:
            raise
        except (*_TAR_ERRORS, OSError, lzma.LZMAError) as exc:
            raise _unreadable(src, exc) from exc
        yield tar


def _decompressed(raw: IO[bytes], magic: bytes) -> contextlib.AbstractContextManager[object]:
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return contextlib.nullcontext(raw)


class _Bounded:
    """A read-only file object that refuses any single read larger than MAX_READ_BYTES."""

    def __init__(self, inner: IO[bytes], src: Path) -> None:
        self._inner = inner
        self._src = src

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ_BYTES:
            raise _refused(
                self._src,
                f"a header declares {size} bytes of metadata (at most {MAX_READ_BYTES}); "
                "archives made by 'modelcrate export' have none that large",
            )
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()


def _refused(src: Path, problem: str) -> IntegrityError:
    return IntegrityError(
        f"refusing the archive: {problem}",
        path=str(src),
        hint="import only archives made by 'modelcrate export' from a source you trust",
    )


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
