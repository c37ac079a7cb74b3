"""Zip, tar and 7z containers: THREATS.md techniques #22, #24-#30, #48, #49 and benign archives."""

from __future__ import annotations

import io
import struct
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcrate.scan import Limits, Location, Severity, scan_file
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding
from modelcrate.scan.zipscan import link_escapes, name_problem, scan_zip
from tests.scan.archivegen import (
    BENIGN_PICKLE,
    EVIL_PICKLE,
    EVIL_PICKLE_P0,
    Member,
    TarItem,
    build_tar,
    build_zip,
    torch_zip,
)


def run(
    data: bytes, name: str = "model.pt", limits: Limits | None = None
) -> tuple[str, list[Finding]]:
    ctx = ScanContext(limits or Limits())
    fmt = ctx.scan_blob(data, Location(name), 0)
    return fmt, ctx.findings


def rules(findings: list[Finding], minimum: Severity = Severity.INFO) -> set[str]:
    return {f.rule_id for f in findings if f.severity >= minimum}


def critical_in(findings: list[Finding], member: str) -> bool:
    return any(f.severity is Severity.CRITICAL and member in f.location.members for f in findings)


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


# --- container-only properties (independent of the pickle scanner) ---------------------------


def test_name_problem_and_link_escape_rules() -> None:
    assert name_problem("../../x") is not None
    assert name_problem("/etc/passwd") is not None
    assert name_problem("..\\..\\x") is not None
    assert name_problem("C:/x") is not None
    assert name_problem("archive/data.pkl") is None
    assert name_problem("a/..b/c") is None
    assert link_escapes("a/b", "../c") is False
    assert link_escapes("a/b", "../../c") is True
    assert link_escapes("a", "/etc/passwd") is True


def test_t48_zip_slip_and_symlink_zip() -> None:
    data = build_zip(
        [
            Member("../../tmp/pwned", b"x"),
            Member("/etc/cron.d/x", b"x"),
            Member("..\\..\\evil.bat", b"x"),
            Member("C:/Windows/x", b"x"),
            Member("assets/link", b"/etc/passwd", unix_mode=0o120777),
            Member("assets/inside", b"other", unix_mode=0o120777),
        ]
    )
    fmt, findings = run(data, "model.zip")
    assert fmt == "zip"
    slips = [f for f in findings if f.rule_id == "archive.path-traversal"]
    assert {f.symbol for f in slips} == {
        "../../tmp/pwned",
        "/etc/cron.d/x",
        "..\\..\\evil.bat",
        "C:/Windows/x",
    }
    assert all(f.severity is Severity.HIGH for f in slips)
    links = {f.symbol: f.severity for f in findings if f.rule_id == "archive.symlink"}
    assert links == {"/etc/passwd": Severity.HIGH, "other": Severity.MEDIUM}


def test_t48_zip_slip_and_symlink_tar() -> None:
    data = build_tar(
        [
            TarItem("../../tmp/pwned", b"x"),
            TarItem("/abs/x", b"x"),
            TarItem("link", link="/etc/passwd"),
            TarItem("hard", link="../outside", hard=True),
            TarItem("ok/file.txt", b"hello"),
        ]
    )
    fmt, findings = run(data, "model.tar")
    assert fmt == "tar"
    slips = {f.symbol for f in findings if f.rule_id == "archive.path-traversal"}
    # tarfile strips a leading '/' on write; the '..' member must be reported either way
    assert "../../tmp/pwned" in slips
    links = {f.symbol: f.severity for f in findings if f.rule_id == "archive.symlink"}
    assert links == {"/etc/passwd": Severity.HIGH, "../outside": Severity.HIGH}


def test_t49_bombs_ratio() -> None:
    limits = Limits(ratio_floor=1024 * 1024)
    data = build_zip([Member("zeros.bin", b"\x00" * (48 * 1024 * 1024), method=8)])
    ctx = ScanContext(limits)
    start = time.perf_counter()
    ctx.scan_blob(data, Location("bomb.zip"), 0)
    assert time.perf_counter() - start < 5
    assert "archive.bomb" in rules(ctx.findings, Severity.HIGH)
    assert ctx.inflated_bytes < 16 * 1024 * 1024  # stopped early, not inflated in full


def test_t49_bombs_overlapping_entries() -> None:
    members = [Member("a.bin", b"\x00" * 4096, method=8)]
    members += [Member(f"copy{i}.bin", b"\x00" * 4096, method=8, alias_of=0) for i in range(500)]
    _, findings = run(build_zip(members), "overlap.zip")
    bombs = [f for f in findings if f.rule_id == "archive.bomb"]
    assert bombs
    assert bombs[0].severity is Severity.HIGH
    assert "500" in bombs[0].message


def test_t49_bombs_100k_entries() -> None:
    members = [Member(f"{i}", b"") for i in range(100_001)]
    data = build_zip(members)
    start = time.perf_counter()
    _, findings = run(data, "many.zip")
    assert time.perf_counter() - start < 20
    assert any(f.rule_id == "archive.bomb" and "100001" in f.message for f in findings)


def test_t49_bombs_nested_zip_depth() -> None:
    data = build_zip([Member("leaf.txt", b"hello")])
    for i in range(10):
        data = build_zip([Member(f"level{i}.zip", data)])
    _, findings = run(data, "nested.zip")
    assert any(f.rule_id == "archive.bomb" and "nested" in f.message for f in findings)


def test_t27_fail_open_iteration_container_only() -> None:
    """A broken member first must not hide the members after it (modelscan #354)."""
    data = build_zip(
        [
            Member("archive/corrupt", b"\xff\xfe not a deflate stream", method=8, raw=True),
            Member("archive/zstd", b"abc", method=93),
            Member("archive/link", b"../../x", unix_mode=0o120777),
        ]
    )
    _, findings = run(data)
    assert any(f.rule_id == "archive.malformed" and "corrupt" in f.message for f in findings)
    assert "archive.unsupported" in rules(findings, Severity.HIGH)
    assert "archive.symlink" in rules(findings, Severity.HIGH)


def test_zip_without_central_directory_is_walked_forward() -> None:
    data = build_zip([Member("a.txt", b"hello"), Member("b/../../c", b"x")], central=False)
    _, findings = run(data, "nocd.zip")
    assert any("no end-of-central-directory" in f.message for f in findings)
    assert "archive.path-traversal" in rules(findings, Severity.HIGH)


def test_genuinely_encrypted_member_is_high() -> None:
    data = build_zip([Member("secret.bin", b"\x13" * 52, flags=0x1, size=40)])
    _, findings = run(data, "enc.zip")
    assert "archive.encrypted" in rules(findings, Severity.HIGH)


def test_truncated_and_garbage_zips_never_raise() -> None:
    good = torch_zip(BENIGN_PICKLE)
    for cut in (10, 40, len(good) // 2, len(good) - 30, len(good) - 1):
        run(good[:cut] + b"PK\x05\x06" + b"\x00" * 18, "cut.zip")
    _, findings = run(b"PK\x03\x04" + b"\xff" * 100, "junk.zip")
    assert findings


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_zip_reader_fuzz_never_raises(data: st.DataObject) -> None:
    base = bytearray(
        build_zip([Member("x/data.pkl", BENIGN_PICKLE, method=8), Member("y.txt", b"hi")])
    )
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    ctx = ScanContext()
    scan_zip(bytes(base), Location("fuzz.zip"), ctx, 0)


def test_flavours_keras_npz_skops() -> None:
    keras = build_zip([Member("config.json", b"{}"), Member("metadata.json", b"{}")])
    assert run(keras, "m.keras")[0] == "keras"
    skops = build_zip([Member("schema.json", b"{}")])
    assert run(skops, "m.skops")[0] == "skops"
    npz = build_zip([Member("a.npy", b"\x93NUMPY\x01\x00\x00\x00")])
    assert run(npz, "w.npz")[0] == "npz"


def test_torch_storages_are_never_read() -> None:
    """A pickle hidden in a raw storage blob is never unpickled by torch, and never read here."""
    data = torch_zip(BENIGN_PICKLE, extra=[Member("archive/data/0", EVIL_PICKLE)])
    fmt, findings = run(data)
    assert fmt == "pytorch-zip"
    assert not [f for f in findings if "archive/data/0" in f.location.members]


# --- techniques that need the pickle scanner to flag the member --------------------------------


def test_t24_zip_crc_mismatch() -> None:
    data = build_zip([Member("archive/data.pkl", EVIL_PICKLE, crc=0xDEADBEEF)])
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    fmt, findings = run(data)
    assert fmt == "pytorch-zip"
    assert critical_in(findings, "archive/data.pkl")


@pytest.mark.parametrize("flag", [0x1, 0x20, 0x40])
def test_t25_zip_flag_bits(flag: int) -> None:
    data = build_zip([Member("archive/data.pkl", EVIL_PICKLE, flags=flag)])
    _, findings = run(data)
    assert any(f.rule_id == "archive.malformed" and "flag bits" in f.message for f in findings)
    assert critical_in(findings, "archive/data.pkl")


def test_t25_zip_flag_bits_deflated() -> None:
    data = build_zip([Member("archive/data.pkl", EVIL_PICKLE, flags=0x1, method=8)])
    _, findings = run(data)
    assert critical_in(findings, "archive/data.pkl")


def test_t26_local_central_name_mismatch() -> None:
    data = build_zip([Member("archive/data.pkl", EVIL_PICKLE, local_name="archive/datap.kl")])
    _, findings = run(data)
    assert any(f.rule_id == "archive.malformed" and "local header" in f.message for f in findings)
    assert critical_in(findings, "archive/data.pkl")


def test_t27_fail_open_iteration() -> None:
    data = build_zip(
        [
            Member("archive/aaa", b"\x00\x01not bzip2", method=12, raw=True),
            Member("archive/zzz", b"abc", method=93),
            Member("archive/data.pkl", EVIL_PICKLE),
        ]
    )
    _, findings = run(data)
    assert "archive.unsupported" in rules(findings)
    assert critical_in(findings, "archive/data.pkl")


@pytest.mark.parametrize("payload", [EVIL_PICKLE, EVIL_PICKLE_P0], ids=["proto2", "proto0"])
def test_t28_pickle_member_non_pickle_name(payload: bytes) -> None:
    data = build_zip([Member("model/data.txt", payload), Member("model/blob", payload, method=8)])
    _, findings = run(data, "bundle.zip")
    assert critical_in(findings, "model/data.txt")
    assert critical_in(findings, "model/blob")


def test_t29_7z_wrapped() -> None:
    py7zr = pytest.importorskip("py7zr")
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        archive.writestr(torch_zip(EVIL_PICKLE), "model.pt")
        archive.writestr(EVIL_PICKLE_P0, "notes.txt")
    fmt, findings = run(buf.getvalue(), "model.7z")
    assert fmt == "7z"
    assert critical_in(findings, "model.pt")
    assert critical_in(findings, "notes.txt")


def test_t29_7z_without_py7zr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py7zr", None)
    _, findings = run(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 32, "model.7z")
    unsupported = [f for f in findings if f.rule_id == "archive.unsupported"]
    assert unsupported
    assert unsupported[0].severity is Severity.HIGH
    assert "modelcrate[scan]" in unsupported[0].message


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # jit is deprecated
def test_t30_torchscript_code() -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), buf)
    fmt, findings = run(buf.getvalue(), "model.pt")
    assert fmt == "torchscript"
    ts = [f for f in findings if f.rule_id == "torch.torchscript"]
    assert ts
    assert ts[0].severity is Severity.HIGH  # executable code: at the default gate
    # constants.pkl with a payload is still scanned like any other pickle
    crafted = build_zip(
        [
            Member("archive/data.pkl", BENIGN_PICKLE),
            Member("archive/constants.pkl", EVIL_PICKLE),
            Member("archive/code/__torch__/m.py", b"def forward(self):\n  return 1\n", method=8),
        ]
    )
    fmt, findings = run(crafted)
    assert fmt == "torchscript"
    assert critical_in(findings, "archive/constants.pkl")
    # code that touches the file system when the model runs is HIGH
    reader = b"def forward(self):\n  return torch.from_file('/etc/passwd', False, 10)\n"
    crafted = build_zip(
        [
            Member("archive/data.pkl", BENIGN_PICKLE),
            Member("archive/code/__torch__/m.py", reader, method=8),
        ]
    )
    _, findings = run(crafted)
    assert any(
        f.rule_id == "torch.torchscript"
        and f.severity is Severity.HIGH
        and f.symbol == "torch.from_file"
        for f in findings
    )
    # a real scripted model: only the archive-level code finding reaches the gate
    assert {f.rule_id for f in run(buf.getvalue())[1] if f.severity >= Severity.HIGH} == {
        "torch.torchscript"
    }


def _legacy_storages() -> bytes:
    count = b"\x80\x02K\x01."
    descr = b"\x80\x02X\x01\x00\x00\x000X\x03\x00\x00\x00cpuctorch\nFloatStorage\n\x87."
    raw = struct.pack("<q", 4) + b"cos\nsystem\n(S'x'"  # 4 floats that spell a GLOBAL
    views = b"\x80\x02]."
    return count + descr + raw + views


def test_t22_legacy_tar() -> None:
    data = build_tar(
        [
            TarItem("sys_info", b"\x80\x02}q\x00."),
            TarItem("pickle", EVIL_PICKLE),
            TarItem("storages", _legacy_storages()),
            TarItem("tensors", b"\x80\x02K\x00."),
        ]
    )
    fmt, findings = run(data, "model.pt")
    assert fmt == "pytorch-legacy-tar"
    legacy = [f for f in findings if f.rule_id == "torch.legacy-tar"]
    assert legacy
    assert legacy[0].severity is Severity.MEDIUM
    assert critical_in(findings, "pickle")
    # the raw storage bytes (which happen to spell GLOBAL os system) are data, not a pickle
    assert not critical_in(findings, "storages")


def test_tar_member_pickle_is_scanned() -> None:
    data = build_tar([TarItem("model/weights.bin", EVIL_PICKLE), TarItem("readme", b"hi")])
    _, findings = run(data, "bundle.tar")
    assert critical_in(findings, "model/weights.bin")


def test_duplicate_member_names_scan_every_copy() -> None:
    data = build_zip(
        [Member("archive/data.pkl", BENIGN_PICKLE), Member("archive/data.pkl", EVIL_PICKLE)]
    )
    _, findings = run(data)
    assert any("appears 2 times" in f.message for f in findings)
    assert critical_in(findings, "archive/data.pkl")


# --- benign archives made with the real libraries ----------------------------------------------


def test_benign_torch_state_dict_zip() -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).state_dict(), buf)
    fmt, findings = run(buf.getvalue(), "pytorch_model.bin")
    assert fmt == "pytorch-zip"
    assert worst(findings) is None or worst(findings) < Severity.HIGH


def test_benign_large_checkpoint_never_reads_tensor_data(tmp_path: Path) -> None:
    """200 MB of tensors: the storages are overwritten with a pickle payload after saving;
    the scan must neither read nor report them, and must be fast."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(50 * 1024 * 1024, dtype=torch.float32)}, path)
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    with path.open("r+b") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        nlen, xlen = struct.unpack_from("<HH", local, 26)
        fh.seek(info.header_offset + 30 + nlen + xlen)
        fh.write(EVIL_PICKLE * 1000)
    start = time.perf_counter()
    report = scan_file(path)
    assert time.perf_counter() - start < 2.0
    assert report.format == "pytorch-zip"
    assert not [f for f in report.findings if any("/data/" in m for m in f.location.members)]
    assert report.verdict is None or report.verdict < Severity.HIGH
