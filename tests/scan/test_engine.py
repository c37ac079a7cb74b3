"""The engine: walking folders, content sniffing, unknown formats, symlinks, fail-closed errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.scan import Location, Severity, scan, scan_file
from modelcrate.scan.context import ScanContext
from modelcrate.scan.limits import Limits
from modelcrate.scan.sniff import sniff

EVIL = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."


def test_directory_is_walked_recursively_in_stable_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / "b" / "deep" / "weights.txt").write_bytes(EVIL)  # a pickle named .txt
    (tmp_path / "a.txt").write_text("hello\n")
    report = scan(tmp_path)
    names = [Path(f.path).relative_to(tmp_path).as_posix() for f in report.files]
    assert names == ["a.txt", "b/deep/weights.txt"]
    assert report.files[1].format == "pickle"
    assert report.files[1].verdict is Severity.CRITICAL


def test_unknown_format_is_reported_not_skipped(tmp_path: Path) -> None:
    p = tmp_path / "blob.bin"
    p.write_bytes(bytes(range(256)) * 4)
    fr = scan_file(p)
    assert fr.format == "unknown"
    assert [(f.severity, f.rule_id) for f in fr.findings] == [(Severity.INFO, "format.unknown")]


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pkl"
    p.write_bytes(b"")
    fr = scan_file(p)
    assert fr.format == "empty"
    assert fr.verdict is None


def test_missing_path_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        scan(tmp_path / "missing")


def test_symlink_escaping_the_folder_is_flagged(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "ok.txt").write_text("x")
    os.symlink("/etc/passwd", model / "tokenizer.json")
    report = scan(model)
    flagged = [f for f in report.findings if f.rule_id == "path.symlink-escape"]
    assert len(flagged) == 1
    assert flagged[0].severity is Severity.HIGH
    assert "/etc/passwd" in flagged[0].message


def test_scanner_crash_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcrate.scan import context

    monkeypatch.setitem(context.SCANNERS, "pickle", "modelcrate.scan.findings:Severity")
    p = tmp_path / "m.pkl"
    p.write_bytes(EVIL)
    fr = scan_file(p)  # Severity(...) raises inside the "scanner": must become a finding
    assert fr.format == "error"
    assert [f.rule_id for f in fr.findings] == ["scan.error"]
    assert fr.verdict is Severity.HIGH


def test_depth_limit_is_a_finding() -> None:
    ctx = ScanContext(limits=Limits(max_depth=1))
    ctx.scan_blob(EVIL, Location("x"), depth=2)
    assert [f.rule_id for f in ctx.findings] == ["archive.bomb"]


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"PK\x03\x04rest", "zip"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"\x93NUMPY\x01\x00", "npy"),
        (b"GGUF\x03\x00\x00\x00", "gguf"),
        (b"\x80\x05\x95", "pickle"),
        (b"\x89HDF\r\n\x1a\n", "hdf5"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"BZh91AY", "bz2"),
        (b"x\x9c\x03\x00", "zlib"),
    ],
)
def test_sniff_by_magic(head: bytes, fmt: str) -> None:
    assert sniff(head, "whatever.safetensors") == fmt


def test_sniff_ignores_misleading_names() -> None:
    assert sniff(EVIL, "model.safetensors") == "pickle"
    assert sniff(b"\x80\x02]q\x00.", "weights.txt") == "pickle"
