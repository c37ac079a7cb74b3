"""The local crate store: content-addressed crate folders and a SQLite index.

Layout under the root (``--store``, ``MODELCRATE_HOME`` or ``~/.modelcrate``)::

    index.db               SQLite: one row per (name, version), with when it was stored here
    crates/<sha256 hex>/   one immutable crate folder per version (the manifest digest)
    locks/<key>.lock       resolved requirements.lock files, by lock request digest
    .stage-*/              a crate being written (renamed into crates/ when complete)

A crate is staged in a temp folder inside the root, every file fsynced, then renamed into place;
the index row is inserted after the rename, in a transaction. Any failure removes what this
operation added, so the store is left as it was. Reads never create anything.

When a crate was put into *this* store is a fact about the store, not the crate: the index
records it (``stored``, shown by ``list`` and ``show``), while the crate's own ``created`` comes
from ``SOURCE_DATE_EPOCH`` (else 1970-01-01), so that a crate's bytes never depend on the clock.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelcrate._fs import atomic_write_bytes
from modelcrate.crate.canonical import NAME_RE
from modelcrate.crate.errors import CrateNotFound, StoreError
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.archive import Exported
    from modelcrate.crate.manifest import Manifest

INDEX_NAME = "index.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS crates (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created TEXT NOT NULL,
    flavor TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored TEXT,
    PRIMARY KEY (name, version)
)
"""
# Indexes written before ``stored`` existed: their ``created`` was the build time, the best guess.
_ADD_STORED = "ALTER TABLE crates ADD COLUMN stored TEXT"


@dataclass(frozen=True)
class CrateRecord:
    """One crate in the index. ``created``: the crate's own date (from its manifest);
    ``stored``: when this store received it (RFC 3339 UTC)."""

    name: str
    version: str
    created: str
    flavor: str
    size: int
    path: Path
    stored: str = ""

    @property
    def short_version(self) -> str:
        return self.version.removeprefix("sha256:")[:12]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.short_version}"


@dataclass(frozen=True)
class Committed:
    """The result of writing a crate: its record, and whether the store already held it."""

    record: CrateRecord
    existed: bool


class Store:
    """A local crate store rooted at ``root``. Creating the object touches nothing on disk."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()  # as_uri() needs an absolute path

    @classmethod
    def default(cls, root: Path | str | None = None) -> Store:
        """``root`` if given, else ``$MODELCRATE_HOME``, else ``~/.modelcrate``."""
        if root is not None:
            return cls(root)
        env = os.environ.get("MODELCRATE_HOME")
        return cls(env if env else Path.home() / ".modelcrate")

    @property
    def crates_dir(self) -> Path:
        return self.root / "crates"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- reading ---------------------------------------------------------------------------

    def list(self, name: str | None = None) -> builtins.list[CrateRecord]:
        """Crates in the index, newest first (by when they were stored, then by insertion)."""
        args: tuple[str, ...] = ()
        where = ""
        if name is not None:
            where = " WHERE name = ?"
            args = (name,)
        with self._read() as conn:
            if conn is None:
                return []
            columns = {row[1] for row in conn.execute("PRAGMA table_info(crates)")}
            stored = "COALESCE(stored, created)" if "stored" in columns else "created"
            query = (
                f"SELECT name, version, created, flavor, size, {stored} AS stored_at "
                f"FROM crates{where} ORDER BY name, stored_at DESC, rowid DESC"
            )
            rows = conn.execute(query, args).fetchall()
        return [self._record(*row) for row in rows]

    def get(self, ref: str) -> CrateRecord:
        """Resolve ``NAME[:VERSION]``: the latest stored, or the version whose digest starts
        with VERSION (with or without ``sha256:``, like a short Docker digest)."""
        name, _, version = ref.partition(":")
        name = name.strip()
        if not NAME_RE.match(name):
            raise InputError(
                f"{ref!r} is not a crate reference",
                hint="use NAME or NAME:VERSION, e.g. iris or iris:3f2a9c1b7d0e",
            )
        candidates = self.list(name)
        if not candidates:
            raise CrateNotFound(
                f"no crate named {name!r} in the store",
                path=str(self.root),
                hint="run 'modelcrate list' to see the crates; build one with 'modelcrate build'",
            )
        if not version:
            return candidates[0]
        prefix = version.strip().lower().removeprefix("sha256:")
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise InputError(
                f"{version!r} is not a version digest",
                hint=f"use a hex prefix of a version listed by 'modelcrate list {name}'",
            )
        matches = [r for r in candidates if r.version.removeprefix("sha256:").startswith(prefix)]
        if not matches:
            raise CrateNotFound(
                f"crate {name!r} has no version starting with {prefix!r}",
                path=str(self.root),
                hint=f"run 'modelcrate list {name}' to see its versions",
            )
        if len(matches) > 1:
            shown = ", ".join(r.short_version for r in matches)
            raise InputError(
                f"version prefix {prefix!r} of {name!r} is ambiguous ({shown})",
                hint="give more digits of the version",
            )
        return matches[0]

    def resolve(self, ref: str) -> Path:
        """The crate folder of ``NAME[:VERSION]``."""
        record = self.get(ref)
        if not (record.path / "crate.yaml").is_file():
            raise CrateNotFound(
                f"crate {record.ref} is in the index but its folder is missing",
                path=str(record.path),
                hint=f"remove it with 'modelcrate rm {record.ref}' and build or import it again",
            )
        return record.path

    # -- writing ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail early, before any work, when the store cannot be written; creates nothing."""
        probe = self.root
        while not probe.exists():
            if probe.is_symlink() or probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise StoreError(
                "the store path is not a folder (a file is in the way)",
                path=str(self.root),
                hint="point --store or MODELCRATE_HOME at a folder",
            )
        if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
            raise _readonly(self.root, f"{probe} is read-only")

    def check_space(self, nbytes: int) -> None:
        """Fail before writing when the store's disk has less than ``nbytes`` free."""
        probe = self.root
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return  # the write itself reports what is wrong
        if free < nbytes:
            raise StoreError(
                f"the store's disk has {free} bytes free, {nbytes} are needed; nothing was written",
                path=str(self.root),
                hint="free some space (modelcrate rm) or point --store/MODELCRATE_HOME at "
                "another disk",
            )

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh temp folder inside the store, removed on exit (commit renames it away)."""
        created = not self.root.exists()
        with store_errors(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=self.root))
            except BaseException:
                self._drop_if_empty(created)
                raise
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            self._drop_if_empty(created)

    def _drop_if_empty(self, created: bool) -> None:
        """Remove the root again when this operation created it and left nothing in it."""
        if created:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def commit(
        self, stage: Path, manifest: Manifest, *, lock_cache: tuple[str, bytes] | None = None
    ) -> Committed:
        """Move a fully written staging folder into place and index it.

        ``lock_cache`` is ``(key, bytes)`` of a freshly resolved lock to cache with the crate.
        Building the same version again returns the stored crate (``existed=True``).
        """
        target = self.crates_dir / manifest.version.removeprefix("sha256:")
        added: builtins.list[Path] = []
        moved = False
        try:
            with store_errors(self.root):
                fsync_tree(stage)
                if not self.crates_dir.is_dir():
                    self.crates_dir.mkdir()
                    added.append(self.crates_dir)
                if not target.exists():
                    try:
                        os.rename(stage, target)
                        moved = True
                    except OSError as exc:  # a concurrent build of the same version won
                        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                            raise
                    _fsync_dir(self.crates_dir)
                # Same version already stored: keep the first copy (and when it was stored).
                if moved:
                    stored = manifest
                else:
                    from modelcrate.crate.manifest import load_manifest

                    stored = load_manifest(target)
                if lock_cache is not None:
                    added.extend(self._cache_lock(*lock_cache))
                record = self._record(
                    stored.name,
                    stored.version,
                    stored.created,
                    stored.flavor,
                    tree_size(target),
                    stored_now(),
                )
                record = self._insert(record, added)
        except BaseException:
            if moved:
                shutil.rmtree(target, ignore_errors=True)
            for path in reversed(added):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            raise
        return Committed(record, existed=not moved)

    def remove(self, ref: str, *, all_versions: bool = False) -> builtins.list[CrateRecord]:
        """Remove one version (or, with ``all_versions``, every version of a name)."""
        name = ref.partition(":")[0]
        if all_versions:
            if ":" in ref:
                raise InputError("--all takes a NAME without a version", hint=f"use {name}")
            records = self.list(name)
            if not records:
                self.get(name)  # raises CrateNotFound
        else:
            if ":" not in ref and len(self.list(name)) > 1:
                count = len(self.list(name))
                raise InputError(
                    f"crate {name!r} has {count} versions",
                    hint=f"name one (modelcrate rm {name}:VERSION) or pass --all",
                )
            records = [self.get(ref)]
        with store_errors(self.root), contextlib.closing(self._connect()) as conn, conn:
            conn.executemany(
                "DELETE FROM crates WHERE name = ? AND version = ?",
                [(r.name, r.version) for r in records],
            )
        for r in records:
            with contextlib.suppress(OSError):
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
                os.rename(r.path, trash / "crate")
                shutil.rmtree(trash, ignore_errors=True)
        return records

    def export_crate(self, ref: str, tar_path: Path | str) -> Exported:
        """Write crate ``ref`` as one reproducible tar (see :mod:`modelcrate.crate.archive`)."""
        from modelcrate.crate.archive import export_crate

        return export_crate(self, ref, tar_path)

    def import_crate(self, tar_path: Path | str) -> Committed:
        """Import a crate archive after verifying it (see :mod:`modelcrate.crate.archive`)."""
        from modelcrate.crate.archive import import_crate

        return import_crate(self, tar_path)

    # -- internals -------------------------------------------------------------------------

    def _record(  # noqa: PLR0917 (one positional per index column, as SELECT returns them)
        self, name: str, version: str, created: str, flavor: str, size: int, stored: str
    ) -> CrateRecord:
        path = self.crates_dir / version.removeprefix("sha256:")
        return CrateRecord(name, version, created, flavor, int(size), path, stored)

    def _cache_lock(self, key: str, data: bytes) -> builtins.list[Path]:
        added: builtins.list[Path] = []
        if not self.locks_dir.is_dir():
            self.locks_dir.mkdir()
            added.append(self.locks_dir)
        target = self.locks_dir / f"{key}.lock"
        if not target.exists():
            atomic_write_bytes(target, data)
            added.append(target)
        return added

    def _insert(self, record: CrateRecord, added: builtins.list[Path]) -> CrateRecord:
        """Insert the row in one transaction; a row already there is kept (with its ``stored``)
        and returned."""
        if not self.index_path.exists():
            added.append(self.index_path)
        with contextlib.closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT OR IGNORE INTO crates (name, version, created, flavor, size, stored) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.version,
                    record.created,
                    record.flavor,
                    record.size,
                    record.stored,
                ),
            )
            row = conn.execute(
                "SELECT COALESCE(stored, created) FROM crates WHERE name = ? AND version = ?",
                (record.name, record.version),
            ).fetchone()
        return replace(record, stored=row[0]) if row else record

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=30.0)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(crates)")}
        if "stored" not in columns:
            with conn:
                conn.execute(_ADD_STORED)
        return conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        if not self.index_path.is_file():
            yield None
            return
        try:
            conn = sqlite3.connect(f"{self.index_path.as_uri()}?mode=ro", uri=True, timeout=30.0)
        except sqlite3.Error as exc:
            raise _index_error(self.index_path, exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise _index_error(self.index_path, exc) from exc
        finally:
            conn.close()


def _index_error(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(
        f"cannot read the store index: {exc}",
        path=str(path),
        hint="check the file's permissions; if it is corrupt, move the store aside and rebuild",
    )


@contextlib.contextmanager
def store_errors(root: Path) -> Iterator[None]:
    """Translate OS and SQLite failures while writing the store into a StoreError."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        raise store_error(root, exc) from exc


def store_error(root: Path, exc: sqlite3.OperationalError | OSError) -> StoreError:
    """The StoreError a person can act on for a failed write under ``root``."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text:
            return _full(root)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return _readonly(root, text)
        return StoreError(f"cannot update the store index: {text}", path=str(root))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _full(root)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return _readonly(root, exc.strerror or str(exc))
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and not root.is_dir():
        return StoreError(
            "the store path is not a folder (a file is in the way)",
            path=str(root),
            hint="point --store or MODELCRATE_HOME at a folder",
        )
    return StoreError(
        f"cannot write the store: {exc.strerror or exc}",
        path=str(getattr(exc, "filename", None) or root),
        hint="check the store folder, its permissions and free space",
    )


def _full(root: Path) -> StoreError:
    return StoreError(
        "the store is full (no space left on device); nothing was written",
        path=str(root),
        hint="free some space (modelcrate rm) or point --store/MODELCRATE_HOME at another disk",
    )


def _readonly(root: Path, detail: str) -> StoreError:
    return StoreError(
        f"the store is not writable ({detail}); nothing was written",
        path=str(root),
        hint="fix its permissions, or point --store/MODELCRATE_HOME at a writable folder",
    )


def stored_now() -> str:
    """The time a crate enters a store: the real clock (an index fact, never in a crate)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time()))


def fsync_tree(root: Path) -> None:
    """fsync every file, then every folder bottom-up, under ``root``."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tree_size(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def write_file(path: Path, data: bytes) -> None:
    """Write one file of a staged crate (creating parents) and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
