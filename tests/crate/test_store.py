"""The local store: resolution, listing, removal, atomic commits that leave nothing on failure."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from modelcrate.crate import store as store_mod
from modelcrate.crate.errors import CrateNotFound, StoreError
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from tests.crate.helpers import hand_crate, snapshot


def test_reading_an_absent_store_creates_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "nowhere")
    assert s.list() == []
    with pytest.raises(CrateNotFound, match="no crate named 'iris'"):
        s.resolve("iris")
    assert not s.root.exists()


def test_default_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCRATE_HOME", str(tmp_path / "env"))
    assert Store.default().root == tmp_path / "env"
    assert Store.default(tmp_path / "flag").root == tmp_path / "flag"
    monkeypatch.delenv("MODELCRATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Store.default().root == tmp_path / "home" / ".modelcrate"


def test_commit_list_get_resolve(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    c = hand_crate(s, "iris", b"model-a")
    assert not c.existed
    assert c.record.path == s.crates_dir / c.record.version.removeprefix("sha256:")
    assert (c.record.path / "crate.yaml").is_file()
    [row] = s.list()
    assert row == c.record
    hexv = c.record.version.removeprefix("sha256:")
    for ref in ("iris", f"iris:{hexv[:6]}", f"iris:sha256:{hexv[:12]}", f"iris:{hexv}"):
        assert s.resolve(ref) == c.record.path
    assert sorted(p.name for p in s.root.iterdir()) == ["crates", "index.db"]


def test_latest_by_created_and_prefixes(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    old = hand_crate(s, "m", b"old", created="2024-01-01T00:00:00Z")
    new = hand_crate(s, "m", b"new", created="2024-06-01T00:00:00Z")
    hand_crate(s, "other", b"x")
    assert s.get("m") == new.record
    assert [r.version for r in s.list("m")] == [new.record.version, old.record.version]
    with pytest.raises(CrateNotFound, match="no version starting with 'fffffffffffff'"):
        s.get("m:fffffffffffff")
    with pytest.raises(InputError, match="not a version digest"):
        s.get("m:xyz")
    with pytest.raises(InputError, match="not a crate reference"):
        s.get("Bad Name")


def test_ambiguous_prefix(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    versions = [hand_crate(s, "m", f"v{i}".encode()).record.version for i in range(17)]
    firsts = [v.removeprefix("sha256:")[0] for v in versions]
    shared = next(c for c in firsts if firsts.count(c) > 1)  # 17 versions, 16 hex digits
    with pytest.raises(InputError, match="ambiguous"):
        s.get(f"m:{shared}")


def test_same_version_twice_is_stored_once(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    first = hand_crate(s, "iris", b"same", created="2024-01-01T00:00:00Z")
    again = hand_crate(s, "iris", b"same", created="2025-01-01T00:00:00Z")
    assert again.existed
    assert again.record == first.record  # the first copy (and its created time) is kept
    assert len(s.list()) == 1
    assert [p.name for p in s.crates_dir.iterdir()] == [first.record.path.name]
    assert not [p for p in s.root.iterdir() if p.name.startswith(".")]


def test_index_row_missing_is_repaired(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    c = hand_crate(s, "iris", b"x")
    with sqlite3.connect(s.index_path) as conn:
        conn.execute("DELETE FROM crates")
    conn.close()
    assert s.list() == []
    assert hand_crate(s, "iris", b"x").existed
    assert s.list() == [c.record]


def test_rm(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    a = hand_crate(s, "m", b"a", created="2024-01-01T00:00:00Z")
    b = hand_crate(s, "m", b"b", created="2024-02-01T00:00:00Z")
    with pytest.raises(InputError, match="has 2 versions") as exc:
        s.remove("m")
    assert exc.value.hint is not None
    assert "--all" in exc.value.hint
    assert s.remove(f"m:{a.record.short_version}") == [a.record]
    assert not a.record.path.exists()
    assert s.remove("m") == [b.record]  # one version left: the name is enough
    assert s.list() == []
    hand_crate(s, "n", b"1")
    hand_crate(s, "n", b"2")
    assert len(s.remove("n", all_versions=True)) == 2
    with pytest.raises(CrateNotFound):
        s.remove("n", all_versions=True)
    assert sorted(p.name for p in s.root.iterdir()) == ["crates", "index.db"]
    assert list(s.crates_dir.iterdir()) == []


def test_missing_crate_folder_is_reported(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    c = hand_crate(s, "iris", b"x")
    import shutil

    shutil.rmtree(c.record.path)
    with pytest.raises(CrateNotFound, match="folder is missing") as exc:
        s.resolve("iris")
    assert exc.value.hint is not None
    assert "modelcrate rm" in exc.value.hint


def test_store_under_a_regular_file_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    s = Store(blocker / "store")
    with pytest.raises(StoreError, match="not a folder") as exc:
        hand_crate(s, "iris", b"x")
    assert exc.value.exit_code == 2
    assert exc.value.path == str(blocker / "store")
    assert blocker.read_bytes() == b"not a folder"


def test_full_disk_while_staging_leaves_store_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "s")
    hand_crate(s, "iris", b"x")
    before = snapshot(s.root)

    def full(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    from tests.crate import helpers

    monkeypatch.setattr(helpers, "write_file", full)
    with pytest.raises(OSError, match="No space"):
        hand_crate(s, "iris", b"y")  # the helper does not translate; build does (test_build)
    assert snapshot(s.root) == before


def test_failed_index_insert_rolls_back_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "s")
    hand_crate(s, "iris", b"x")
    before = snapshot(s.root)

    def full(self: Store, record: object, added: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store_mod.Store, "_insert", full)
    with pytest.raises(StoreError, match="store is full") as exc:
        hand_crate(s, "iris", b"y")
    assert exc.value.hint is not None
    assert "space" in exc.value.hint
    assert snapshot(s.root) == before


def test_first_commit_failure_leaves_no_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "fresh")

    def full(self: Store, record: object, added: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.Store, "_insert", full)
    with pytest.raises(StoreError, match="store is full"):
        hand_crate(s, "iris", b"y")
    assert not s.root.exists()


def test_read_only_filesystem_on_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount (EROFS) as root sees it: the error says so, nothing changes."""
    s = Store(tmp_path / "s")
    hand_crate(s, "iris", b"x")
    before = snapshot(s.root)

    def erofs(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(store_mod.os, "rename", erofs)
    with pytest.raises(StoreError, match="not writable") as exc:
        hand_crate(s, "iris", b"y")
    assert exc.value.exit_code == 2
    assert snapshot(s.root) == before


def test_relative_store_root_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Store("relative-store")
    assert s.root == tmp_path / "relative-store"
    hand_crate(s, "iris", b"x")
    assert [c.name for c in s.list()] == ["iris"]


def test_an_index_from_before_stored_times_is_read_and_upgraded(tmp_path: Path) -> None:
    """Indexes written before the ``stored`` column: read as they are (their ``created`` was
    the build time), upgraded in place by the next write."""
    s = Store(tmp_path / "s")
    old = hand_crate(s, "m", b"old", created="2024-01-01T00:00:00Z").record
    with sqlite3.connect(s.index_path) as conn:
        conn.execute("ALTER TABLE crates DROP COLUMN stored")
    assert [(r.version, r.stored) for r in s.list()] == [(old.version, "2024-01-01T00:00:00Z")]
    new = hand_crate(s, "m", b"new").record
    assert new.stored > "2024-01-01T00:00:00Z"
    assert [r.version for r in s.list("m")] == [new.version, old.version]  # newest stored first
    with sqlite3.connect(s.index_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(crates)")}
    assert "stored" in columns
    assert s.get("m").version == new.version
