"""Export/import: one reproducible tar per crate; imports verified, unsafe archives refused."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcrate.crate.archive import export_crate, import_crate
from modelcrate.crate.errors import IntegrityError, StoreError
from modelcrate.crate.layout import verify_crate
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from tests.crate.helpers import hand_crate, iris_onnx_bytes, snapshot

Member = tuple[tarfile.TarInfo, bytes | None]


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    return iris_onnx_bytes()


@pytest.fixture
def exported(tmp_path: Path, onnx_model: bytes) -> tuple[Store, Path]:
    s = Store(tmp_path / "src-store")
    hand_crate(s, "iris", onnx_model)
    out = tmp_path / "iris.tar"
    export_crate(s, "iris", out)
    return s, out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_is_reproducible(tmp_path: Path, onnx_model: bytes) -> None:
    s = Store(tmp_path / "a")
    hand_crate(s, "iris", onnx_model)
    first = export_crate(s, "iris", tmp_path / "1.tar")
    second = export_crate(s, "iris", tmp_path / "2.tar")
    assert first.sha256 == second.sha256 == _sha(tmp_path / "1.tar")
    # The same crate built into another store exports to the same bytes.
    other = Store(tmp_path / "b")
    hand_crate(other, "iris", onnx_model)
    assert export_crate(other, "iris", tmp_path / "3.tar").sha256 == first.sha256
    gz1 = export_crate(s, "iris", tmp_path / "1.tar.gz")
    gz2 = export_crate(s, "iris", tmp_path / "2.tgz")
    assert gz1.sha256 == gz2.sha256 != first.sha256


def test_export_metadata_is_normalised(
    exported: tuple[Store, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = exported
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "crate.yaml",
        "model",
        "model/model.onnx",
        "requirements.lock",
        "sbom.cdx.json",
        "scan.json",
        "signature.json",
    ]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    s, _ = exported
    export_crate(s, "iris", tmp_path / "sde.tar")
    with tarfile.open(tmp_path / "sde.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_import_round_trip(exported: tuple[Store, Path], tmp_path: Path) -> None:
    src_store, out = exported
    dest = Store(tmp_path / "dest")
    committed = import_crate(dest, out)
    assert not committed.existed
    original = src_store.get("iris")
    assert committed.record.version == original.version
    assert committed.record.created == original.created
    for name in ("crate.yaml", "model/model.onnx", "requirements.lock", "signature.json"):
        assert (committed.record.path / name).read_bytes() == (original.path / name).read_bytes()
    verify_crate(committed.record.path)
    assert import_crate(dest, out).existed
    assert len(dest.list()) == 1
    # And it exports back to the very same bytes.
    assert export_crate(dest, "iris", tmp_path / "again.tar").sha256 == _sha(out)


def _rewrite(src: Path, dest: Path, edit: Callable[[list[Member]], list[Member]]) -> Path:
    with tarfile.open(src) as tar:
        members: list[Member] = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            members.append((m, f.read() if f else None))
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in edit(members):
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return dest


def _flip_model_byte(members: list[Member]) -> list[Member]:
    out: list[Member] = []
    for info, data in members:
        if info.name == "model/model.onnx" and data is not None:
            data = data[:-1] + bytes([data[-1] ^ 1])
        out.append((info, data))
    return out


def _rename_crate(members: list[Member]) -> list[Member]:
    return [
        (i, d.replace(b"name: iris", b"name: evil") if i.name == "crate.yaml" and d else d)
        for i, d in members
    ]


def _add(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Callable[..., list[Member]]:
    def edit(members: list[Member]) -> list[Member]:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        return [*members, (info, b"payload" if kind == tarfile.REGTYPE else None)]

    return edit


def _drop(name: str) -> Callable[[list[Member]], list[Member]]:
    return lambda members: [(i, d) for i, d in members if i.name != name]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_flip_model_byte, "does not match the sha256"),
        (_rename_crate, "does not match its version digest"),
        (_add("../escape.txt"), "escapes the crate folder"),
        (_add("/etc/evil"), "absolute or malformed"),
        (_add("model/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (_add("model/hard", tarfile.LNKTYPE, "crate.yaml"), "is a link"),
        (_add("model/fifo", tarfile.FIFOTYPE), "special file"),
        (_add("run.sh"), "not a crate file"),
        (_add("model/extra.bin"), "files the manifest does not list"),
        (_add("crate.yaml"), "appears twice"),
        (_drop("requirements.lock"), "missing"),
    ],
    ids=[
        "tampered-artifact",
        "tampered-manifest",
        "traversal",
        "absolute",
        "symlink",
        "hardlink",
        "fifo",
        "unknown-file",
        "unlisted-artifact",
        "duplicate",
        "missing-file",
    ],
)
def test_unsafe_or_tampered_archives_are_refused(
    exported: tuple[Store, Path],
    tmp_path: Path,
    edit: Callable[[list[Member]], list[Member]],
    message: str,
) -> None:
    _, out = exported
    bad = _rewrite(out, tmp_path / "bad.tar", edit)
    dest = Store(tmp_path / "dest")
    hand_crate(dest, "kept", b"existing crate")
    before = snapshot(dest.root)
    outside = snapshot(tmp_path)
    with pytest.raises(IntegrityError, match=message) as exc:
        import_crate(dest, bad)
    assert exc.value.exit_code == 2
    assert exc.value.path == str(bad)
    assert exc.value.hint
    assert snapshot(dest.root) == before
    assert snapshot(tmp_path) == outside  # nothing written anywhere else either


def test_corrupt_and_truncated_archives(exported: tuple[Store, Path], tmp_path: Path) -> None:
    _, out = exported
    data = out.read_bytes()
    dest = Store(tmp_path / "dest")
    for name, blob in {
        "truncated.tar": data[: len(data) // 3],
        "garbage.tar": b"\x00not a tar at all" * 100,
        "header.tar": data[:148] + b"99999999" + data[156:],  # broken header checksum
    }.items():
        bad = tmp_path / name
        bad.write_bytes(blob)
        with pytest.raises(IntegrityError):
            import_crate(dest, bad)
    assert not dest.root.exists()


def test_missing_archive_and_bad_export_destination(
    exported: tuple[Store, Path], tmp_path: Path
) -> None:
    s, _ = exported
    with pytest.raises(InputError, match="no such crate archive"):
        import_crate(s, tmp_path / "absent.tar")
    with pytest.raises(InputError, match="cannot write the export") as exc:
        export_crate(s, "iris", tmp_path / "no-such-dir" / "x.tar")
    assert exc.value.path == str(tmp_path / "no-such-dir" / "x.tar")


def test_export_refuses_a_tampered_crate(exported: tuple[Store, Path], tmp_path: Path) -> None:
    s, _ = exported
    model = s.resolve("iris") / "model" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        export_crate(s, "iris", tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_import_into_an_unwritable_store(exported: tuple[Store, Path], tmp_path: Path) -> None:
    _, out = exported
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(StoreError, match="not a folder"):
        import_crate(Store(blocker / "store"), out)
    assert blocker.read_text() == "a file"


def test_golden_export_bytes(tmp_path: Path) -> None:
    """Fixed crate content -> fixed tar bytes (plain tar: no compressor version involved)."""
    s = Store(tmp_path / "s")
    committed = hand_crate(s, "golden", b"golden model bytes")
    assert committed.record.version == (
        "sha256:71d33ae4455b6df2d03b7db50f3241f25d8656a9d7a864b1e60fe11c3d5e3182"
    )
    exported = export_crate(s, "golden", tmp_path / "g.tar")
    assert exported.sha256 == "e834ae1b16c4e2eccf9f45bfd7a7d375698b55bfaa275336ed5a82e1ac48e962"
