"""A base image's file tree, read from its layers, and the Python interpreter inside it.

Only names, kinds, modes and link targets are kept (never file contents), so a 200 MB base is
read in about a second. Layers are applied in order with the OCI whiteout rules: ``.wh.NAME``
removes ``NAME`` from the layers below, ``.wh..wh..opq`` empties its folder of what the layers
below put there; both apply to lower layers only, so a layer's own entries stay. Symlinks are
followed component by component, inside the image (``..`` stops at ``/``), like the kernel does
once the image is unpacked: ``/usr/bin/python3 -> python3.11`` and merged-``/usr`` links
(``/bin -> usr/bin``) across layers both resolve.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import posixpath
import re
import tarfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Final, Literal, cast

from modelcrate.errors import InputError

Kind = Literal["file", "dir", "symlink", "other"]
WHITEOUT: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"
MAX_LINK_HOPS: Final = 40  # Linux's own limit on symlinks followed in one lookup
# Where official and distribution images keep the interpreter, most specific first.
CANDIDATES: Final = (
    "/usr/local/bin/python3",
    "/usr/bin/python3",
    "/usr/local/bin/python",
    "/usr/bin/python",
    "/opt/python/bin/python3",
)
SEARCH_DIRS: Final = ("/usr/local/bin", "/usr/bin", "/opt/python/bin")
# Standard-library parts `modelcrate serve` imports (Debian splits them across packages).
STDLIB_NEEDED: Final = (
    "encodings",
    "asyncio",
    "json",
    "email",
    "http",
    "logging",
    "sqlite3",
    "ssl.py",
)
_VERSIONED = re.compile(r"^python(3)\.(\d{1,2})$")
_CHUNK = 1 << 20
# Files whose contents are kept (small text the library search needs), relative to "/".
KEPT_FILES: Final = ("etc/ld.so.conf",)
KEPT_DIRS: Final = ("etc/ld.so.conf.d/",)
MAX_KEPT_BYTES: Final = 64 * 1024
MAX_CONF_DEPTH: Final = 8
# Where glibc's loader looks without any configuration, for a multiarch triplet (Debian puts
# libraries under /usr/lib/<triplet>, Fedora and most others under /usr/lib64).
DEFAULT_LIBRARY_DIRS: Final = (
    "/lib/{t}",
    "/usr/lib/{t}",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


@dataclass(frozen=True)
class Member:
    """One tar entry of a layer, reduced to what the tree needs."""

    path: str  # relative, normalised, no leading "/" or "./"
    kind: Kind
    mode: int
    target: str | None = None  # symlink target as written, or hard-link source path
    data: bytes | None = None  # contents, for the few small files in KEPT_FILES / KEPT_DIRS


@dataclass(frozen=True)
class Interpreter:
    """The Python inside a base image."""

    path: str  # absolute, symlinks resolved: what the entrypoint runs
    version: str  # "3.11"
    found_as: str  # the well-known name it was found under, e.g. "/usr/local/bin/python3"
    stdlib: str  # the standard library folder, e.g. "/usr/local/lib/python3.11"


class _Node:
    __slots__ = ("children", "data", "kind", "mode", "target")

    def __init__(
        self, kind: Kind, mode: int, target: str | None = None, data: bytes | None = None
    ) -> None:
        self.kind: Kind = kind
        self.mode = mode
        self.target = target
        self.data = data
        self.children: dict[str, _Node] | None = {} if kind == "dir" else None


class RootFS:
    """The merged file tree of an image's layers (names and kinds only)."""

    def __init__(self) -> None:
        self._root = _Node("dir", 0o755)

    # -- building ---------------------------------------------------------------------------

    def apply(self, members: Iterable[Member]) -> None:
        """Apply one layer: its whiteouts to the tree below first, then its entries."""
        entries: list[Member] = []
        for m in members:
            parent, name = posixpath.split(m.path)
            if name == OPAQUE:
                node = self._lookup(parent)
                if node is not None and node.children is not None:
                    node.children.clear()
            elif name.startswith(WHITEOUT):
                node = self._lookup(parent)
                if node is not None and node.children is not None:
                    node.children.pop(name[len(WHITEOUT) :], None)
            else:
                entries.append(m)
        for m in entries:
            self._add(m)

    def _add(self, m: Member) -> None:
        parts = [p for p in m.path.split("/") if p]
        if not parts:
            if m.kind == "dir":
                self._root.mode = m.mode
            return
        node = self._root
        for part in parts[:-1]:
            assert node.children is not None
            child = node.children.get(part)
            if child is None or child.children is None:  # a layer entry under it makes it a dir
                child = node.children[part] = _Node("dir", 0o755)
            node = child
        assert node.children is not None
        name = parts[-1]
        old = node.children.get(name)
        if m.kind == "dir" and old is not None and old.children is not None:
            old.mode = m.mode  # an existing folder keeps what lower layers put in it
            return
        if m.target is not None and m.kind == "file":  # hard link: same kind as its source
            src = self._lookup(m.target)
            kind: Kind = src.kind if src is not None and src.kind != "dir" else "file"
            node.children[name] = _Node(
                kind,
                src.mode if src else m.mode,
                src.target if src else None,
                src.data if src else None,
            )
            return
        node.children[name] = _Node(m.kind, m.mode, m.target, m.data)

    # -- reading ----------------------------------------------------------------------------

    def _lookup(self, path: str) -> _Node | None:
        node: _Node | None = self._root
        for part in (p for p in path.split("/") if p and p != "."):
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def resolve(self, path: str) -> str | None:
        """The absolute real path of ``path`` (every symlink followed), or None if it dangles,
        loops, or a component is missing."""
        todo = deque(p for p in path.split("/") if p)
        done: list[str] = []
        node = self._root
        hops = 0
        while todo:
            part = todo.popleft()
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                    node = self._lookup("/".join(done)) or self._root
                continue
            if node.children is None:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            if child.kind == "symlink" and child.target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return None
                if child.target.startswith("/"):
                    done, node = [], self._root
                todo.extendleft(reversed([p for p in child.target.split("/") if p]))
                continue
            done.append(part)
            node = child
        return "/" + "/".join(done)

    def kind(self, path: str) -> Kind | None:
        node = self._lookup(path)
        return None if node is None else node.kind

    def is_executable(self, path: str) -> bool:
        node = self._lookup(path)
        return node is not None and node.kind == "file" and bool(node.mode & 0o111)

    def listdir(self, path: str) -> list[str]:
        real = self.resolve(path)
        node = self._lookup(real) if real else None
        return sorted(node.children) if node is not None and node.children is not None else []

    def find_python(self) -> Interpreter | None:
        """The interpreter under a well-known name, else any ``python3.N`` in the usual folders."""
        for name in CANDIDATES:
            found = self._interpreter(name)
            if found is not None:
                return found
        for folder in SEARCH_DIRS:
            for name in reversed(self.listdir(folder)):  # the newest minor first
                if _VERSIONED.match(name):
                    found = self._interpreter(f"{folder}/{name}")
                    if found is not None:
                        return found
        return None

    def _interpreter(self, name: str) -> Interpreter | None:
        real = self.resolve(name)
        if real is None or not self.is_executable(real):
            return None
        version = _version_of(posixpath.basename(real))
        if version is None:  # e.g. python3 is the real file: a versioned sibling names it
            folder = posixpath.dirname(real)
            for sibling in reversed(self.listdir(folder)):
                if _VERSIONED.match(sibling) and self.resolve(f"{folder}/{sibling}") == real:
                    version = _version_of(sibling)
                    break
        prefix = posixpath.dirname(posixpath.dirname(real))
        if version is None:  # last resort: the one standard library next to it
            libs = [n for n in self.listdir(f"{prefix}/lib") if _VERSIONED.match(n)]
            version = _version_of(libs[0]) if len(libs) == 1 else None
        if version is None:
            return None
        stdlib = posixpath.join(prefix, "lib", f"python{version}")
        return Interpreter(path=real, version=version, found_as=name, stdlib=stdlib)

    def read_kept(self, path: str) -> bytes | None:
        """The contents of ``path`` (symlinks followed) if it is one of the kept small files."""
        real = self.resolve(path)
        node = self._lookup(real) if real else None
        return None if node is None or node.kind != "file" else node.data

    def library_dirs(self, triplet: str, extra: Sequence[str] = ()) -> list[str]:
        """The folders the dynamic loader searches: ``extra`` (LD_LIBRARY_PATH) first, then the
        folders ``/etc/ld.so.conf`` names (its ``include`` globs followed), then the defaults
        for ``triplet`` (e.g. ``x86_64-linux-gnu``). Absolute, each once, in search order."""
        out: list[str] = []
        for folder in (
            *extra,
            *self._conf_dirs("/etc/ld.so.conf", 0),
            *(d.format(t=triplet) for d in DEFAULT_LIBRARY_DIRS),
        ):
            clean = posixpath.normpath(folder)
            if folder.startswith("/") and clean not in out:
                out.append(clean)
        return out

    def _conf_dirs(self, path: str, depth: int) -> list[str]:
        """The folders one ld.so.conf file names, as glibc's ldconfig reads it."""
        data = self.read_kept(path) if depth <= MAX_CONF_DEPTH else None
        if data is None:
            return []
        out: list[str] = []
        for raw in data.decode("utf-8", "replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith("hwcap "):
                continue
            words = line.split()
            if words[0] == "include":
                for pattern in words[1:]:
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for included in self._glob(pattern):
                        out.extend(self._conf_dirs(included, depth + 1))
                continue
            out.extend(d.split("=", 1)[0] for d in re.split(r"[:,\s]+", line) if d)
        return out

    def _glob(self, pattern: str) -> list[str]:
        """Files matching ``pattern``, whose wildcards may only be in the last component."""
        folder, name = posixpath.split(pattern)
        if any(c in folder for c in "*?["):
            return []
        return [f"{folder}/{n}" for n in self.listdir(folder) if fnmatch.fnmatchcase(n, name)]

    def library_names(self, dirs: Iterable[str]) -> set[str]:
        """Every name in ``dirs`` that resolves to a file (libraries and their symlinks)."""
        names: set[str] = set()
        for folder in dirs:
            for name in self.listdir(folder):
                if (
                    name not in names
                    and self.kind(self.resolve(f"{folder}/{name}") or "") == "file"
                ):
                    names.add(name)
        return names

    def is_musl(self) -> bool:
        """True for a musl libc system (Alpine): manylinux wheels do not run there."""
        return any(name.startswith("ld-musl-") for name in self.listdir("/lib"))

    def missing_stdlib(self, interpreter: Interpreter) -> list[str]:
        """The standard-library parts ``serve`` needs that the base does not have."""
        return [
            part.removesuffix(".py")
            for part in STDLIB_NEEDED
            if self.resolve(f"{interpreter.stdlib}/{part}") is None
        ]


def _version_of(name: str) -> str | None:
    m = _VERSIONED.match(name)
    return f"{m.group(1)}.{m.group(2)}" if m else None


# -- layer blobs ---------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Reads a stream and hashes every byte it hands out (the layer's diff_id)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.sha.update(data)
        return len(data)


def _hashing_drain(reader: _HashingReader) -> str:
    while reader.read(_CHUNK):
        pass
    return "sha256:" + reader.sha.hexdigest()


def layer_members(blob: bytes, *, diff_id: str | None = None, where: str = "") -> Iterator[Member]:
    """The entries of one layer blob (gzip or plain tar). With ``diff_id``, the uncompressed
    bytes are hashed on the way and a mismatch raises InputError after the last entry."""
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        raise InputError(
            "the base image has a zstd-compressed layer, which modelcrate cannot read yet",
            path=where or None,
            hint="use a base whose layers are gzip-compressed (what docker and podman push)",
        )
    raw: IO[bytes] = io.BytesIO(blob)
    if blob[:2] == b"\x1f\x8b":
        raw = cast("IO[bytes]", gzip.GzipFile(fileobj=raw))
    reader = _HashingReader(raw)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for info in tar:
                member = _member(info)
                if member is not None and member.kind == "file" and _kept(member, info):
                    fh = tar.extractfile(info)
                    member = Member(
                        member.path, "file", member.mode, None, fh.read() if fh else b""
                    )
                if member is not None:
                    yield member
        got = _hashing_drain(reader)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise InputError(
            f"a layer of the base image is not a readable tar archive: {exc}",
            path=where or None,
            hint="the base image is corrupt or uses an unsupported layer format; pull it again",
        ) from exc
    if diff_id is not None and got != diff_id:
        raise InputError(
            f"a base layer's content ({got}) does not match its diff_id in the image config "
            f"({diff_id})",
            path=where or None,
            hint="the base image is corrupt or was tampered with; pull it again from a trusted "
            "source",
        )


def _member(info: tarfile.TarInfo) -> Member | None:
    path = posixpath.normpath("/" + info.name).lstrip("/")
    if path in ("", "."):
        path = ""
    if info.isdir():
        return Member(path, "dir", info.mode)
    if info.issym():
        return Member(path, "symlink", info.mode, info.linkname)
    if info.islnk():
        return Member(path, "file", info.mode, posixpath.normpath("/" + info.linkname).lstrip("/"))
    if info.isreg():
        return Member(path, "file", info.mode)
    return Member(path, "other", info.mode)


def _kept(member: Member, info: tarfile.TarInfo) -> bool:
    """Whether to keep this entry's contents: a small regular file the library search reads."""
    path = member.path
    wanted = path in KEPT_FILES or any(
        path.startswith(d) and "/" not in path[len(d) :] for d in KEPT_DIRS
    )
    return wanted and member.target is None and info.isreg() and info.size <= MAX_KEPT_BYTES


def read_rootfs(layers: Iterable[tuple[bytes, str | None]], *, where: str = "") -> RootFS:
    """The merged tree of ``layers`` (blob, diff_id to verify or None), lowest first."""
    fs = RootFS()
    for blob, diff_id in layers:
        fs.apply(layer_members(blob, diff_id=diff_id, where=where))
    return fs
