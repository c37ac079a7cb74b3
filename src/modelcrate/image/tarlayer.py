"""Deterministic image layers: the same files always give the same tar, gzip and digests.

A layer is a tar of :class:`LayerFile` entries, written with fixed metadata so that its bytes
depend on the file paths, contents and (normalised) modes only:

- entries sorted by path; every missing parent folder added (mode 0755);
- mtime ``epoch`` (``SOURCE_DATE_EPOCH`` or 0 by convention), uid/gid 0, empty user/group names;
- modes 0644 for files, 0755 for folders and executables (any ``x`` bit), 0777 for symlinks;
  setuid/setgid/sticky bits and write bits for group/other are dropped;
- POSIX ustar headers; a pax record (``path``/``linkpath`` only) appears just where a name does
  not fit the ustar name field (over 100 bytes or not ASCII); never atime/ctime records;
- gzip with no file name, mtime 0 and a fixed level (:data:`GZIP_LEVEL`).

``digest`` is the sha256 of the gzip blob (what registries store), ``diff_id`` the sha256 of the
uncompressed tar (what the image config lists).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modelcrate.errors import InputError

MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
_GZIP_TYPES = frozenset({MEDIA_TYPE_LAYER_GZIP, DOCKER_LAYER_GZIP})
_TAR_TYPES = frozenset({MEDIA_TYPE_LAYER_TAR, DOCKER_LAYER_TAR})
GZIP_LEVEL = 6
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerFile:
    """One entry of a layer: a file (``data``), a folder (``data is None``) or a symlink (``link``).

    ``path`` is absolute inside the image (``/opt/modelcrate/crate/crate.yaml``); ``mode`` only
    decides between 0644 and 0755 for files (any execute bit makes it 0755).
    """

    path: str
    data: bytes | None
    mode: int = 0o644
    link: str | None = None


@dataclass(frozen=True)
class Layer:
    """A finished layer blob and its identities."""

    blob: bytes
    digest: str
    diff_id: str
    size: int
    media_type: str = MEDIA_TYPE_LAYER_GZIP


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layer(files: Iterable[LayerFile], *, epoch: int = 0, level: int = GZIP_LEVEL) -> Layer:
    """Write ``files`` as one deterministic gzip layer (parents added, entries sorted)."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    entries = _normalised(files)
    sink = _Sink(level)
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name, entry in entries:
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            elif entry.data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o755 if entry.mode & 0o111 else 0o644
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    blob, diff_id = sink.finish()
    return Layer(blob, sha256_digest(blob), diff_id, len(blob), MEDIA_TYPE_LAYER_GZIP)


def layer_from_blob(blob: bytes, media_type: str = MEDIA_TYPE_LAYER_GZIP) -> Layer:
    """A :class:`Layer` for an existing blob (gzip or plain tar); computes its ``diff_id``."""
    digest = sha256_digest(blob)
    if media_type in _TAR_TYPES:
        return Layer(blob, digest, digest, len(blob), media_type)
    if media_type not in _GZIP_TYPES:
        raise InputError(
            f"unsupported layer media type {media_type!r}",
            hint="modelcrate reads gzip-compressed or plain tar layers",
        )
    sha = hashlib.sha256()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as gz:
            while chunk := gz.read(_CHUNK):
                sha.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(
            f"layer {digest} is not valid gzip: {exc}",
            hint="the blob is corrupt or its media type is wrong; fetch the image again",
        ) from exc
    return Layer(blob, digest, "sha256:" + sha.hexdigest(), len(blob), media_type)


def files_from_dir(
    root: Path, dest: str, *, exclude: Callable[[str], bool] | None = None
) -> list[LayerFile]:
    """Every folder, file and symlink under ``root`` as entries under absolute ``dest``.

    ``exclude`` gets each path relative to ``root`` (POSIX form) and drops it (and, for a
    folder, everything inside) when it returns True. Symlinks are kept as links, never followed.
    """
    base = "/" + dest.strip("/")
    out: list[LayerFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for name in sorted(dirnames):
            rel = prefix + name
            if exclude is not None and exclude(rel):
                continue
            full = Path(dirpath, name)
            if full.is_symlink():
                out.append(LayerFile(f"{base}/{rel}", None, 0o777, os.readlink(full)))
            else:
                kept.append(name)
                out.append(LayerFile(f"{base}/{rel}", None, 0o755))
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            if exclude is not None and exclude(rel):
                continue
            full = Path(dirpath, name)
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(LayerFile(f"{base}/{rel}", None, 0o777, os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                out.append(LayerFile(f"{base}/{rel}", full.read_bytes(), st.st_mode))
            else:
                raise InputError(
                    "cannot put a special file (device, socket or pipe) into a layer",
                    path=str(full),
                    hint="layers hold regular files, folders and symlinks only",
                )
    return out


def _normalised(files: Iterable[LayerFile]) -> list[tuple[str, LayerFile]]:
    """Validated entries by tar name, parents added, sorted; conflicting duplicates refused."""
    by_name: dict[str, LayerFile] = {}
    for entry in files:
        name = _tar_name(entry.path)
        if entry.link is not None and entry.data is not None:
            raise InputError(
                f"layer entry {entry.path!r} has both data and a link target",
                hint="a symlink carries no data; pass data=None",
            )
        previous = by_name.get(name)
        if previous is not None and not (_is_dir(previous) and _is_dir(entry)):
            raise InputError(
                f"layer entry {entry.path!r} is given twice",
                hint="each path may appear once in a layer",
            )
        by_name[name] = entry
    for name in list(by_name):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = by_name.get(parent)
            if existing is None:
                by_name[parent] = LayerFile("/" + parent, None, 0o755)
            elif not _is_dir(existing):
                raise InputError(
                    f"layer entry /{name!s} lies under /{parent}, which is not a folder",
                    hint="a file or symlink cannot also be a parent folder",
                )
    return sorted(by_name.items())


def _is_dir(entry: LayerFile) -> bool:
    return entry.data is None and entry.link is None


def _tar_name(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        problem = "must be an absolute POSIX path"
    elif path == "/" or any(p in ("", ".", "..") for p in parts[1:]):
        problem = "must name a file below / without '.', '..' or empty parts"
    else:
        return path[1:]
    raise InputError(f"layer path {path!r} {problem}", hint="use paths like /opt/app/file.txt")


class _Sink:
    """A write-only file for tarfile: hashes the tar and gzips it (name '', mtime 0)."""

    def __init__(self, level: int) -> None:
        self._sha = hashlib.sha256()
        self._out = io.BytesIO()
        self._gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._out, compresslevel=level, mtime=0
        )
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self._gz.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def finish(self) -> tuple[bytes, str]:
        self._gz.close()
        return self._out.getvalue(), "sha256:" + self._sha.hexdigest()
