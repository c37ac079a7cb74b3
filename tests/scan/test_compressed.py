"""Compressed streams (THREATS.md #33 compressed joblib, #49 bombs applied to joblib streams)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcrate.scan import Limits, Location, Severity, scan_file
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding
from tests.scan.archivegen import BENIGN_PICKLE, EVIL_PICKLE


def _lz4(data: bytes) -> bytes:
    import lz4.frame

    out: bytes = lz4.frame.compress(data)
    return out


def _zf(data: bytes) -> bytes:
    return b"ZF" + hex(len(data)).encode().ljust(19) + zlib.compress(data)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.compress,
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "lz4": _lz4,
    "zf": _zf,
}


def run(
    data: bytes, name: str = "model.joblib", limits: Limits | None = None
) -> tuple[str, ScanContext]:
    ctx = ScanContext(limits or Limits())
    return ctx.scan_blob(data, Location(name), 0), ctx


def critical(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.CRITICAL for f in findings)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_t33_compressed_joblib(kind: str) -> None:
    fmt, ctx = run(COMPRESSORS[kind](EVIL_PICKLE))
    assert fmt == f"joblib-{'joblib-zf' if kind == 'zf' else kind}".replace(
        "joblib-joblib-", "joblib-"
    )
    assert critical(ctx.findings)
    assert all(f.location.members for f in ctx.findings if f.severity is Severity.CRITICAL)


@pytest.mark.parametrize("kind", ["zlib", "gzip", "bz2", "xz", "lzma", "lz4"])
def test_benign_joblib_compressed_sklearn_model(kind: str, tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [0, 1, 1, 0])
    path = tmp_path / "model.joblib"
    joblib.dump(model, path, compress=(kind, 3))
    report = scan_file(path)
    assert report.format.startswith("joblib-")
    assert report.verdict is None or report.verdict < Severity.HIGH


def test_t49_bombs_joblib_zlib_stops_early() -> None:
    """Like corpus p51: a small zlib joblib that inflates to a huge run of zeros."""
    data = zlib.compress(BENIGN_PICKLE[:-1] + b"\x00" * (64 * 1024 * 1024), 9)
    start = time.perf_counter()
    _, ctx = run(data)
    assert time.perf_counter() - start < 3
    assert any(f.rule_id == "archive.bomb" and f.severity is Severity.HIGH for f in ctx.findings)
    assert ctx.inflated_bytes < 24 * 1024 * 1024


def test_t49_bombs_total_budget() -> None:
    limits = Limits(max_inflated_bytes=1024 * 1024, max_ratio=1e9)
    _, ctx = run(gzip.compress(b"\x01" * (4 * 1024 * 1024)), limits=limits)
    assert any(f.rule_id == "archive.bomb" for f in ctx.findings)


def test_truncated_stream_is_malformed_and_prefix_scanned() -> None:
    payload = EVIL_PICKLE + b"\x00" * 200_000
    data = gzip.compress(payload)[:-40]
    _, ctx = run(data)
    assert any(f.rule_id == "archive.malformed" for f in ctx.findings)
    assert critical(ctx.findings)


def test_corrupt_stream_is_malformed() -> None:
    data = bytearray(bz2.compress(EVIL_PICKLE * 50))
    data[len(data) // 2] ^= 0xFF
    _, ctx = run(bytes(data))
    assert any(f.rule_id == "archive.malformed" for f in ctx.findings)


def test_multi_member_gzip_scans_every_member() -> None:
    data = gzip.compress(EVIL_PICKLE[:5]) + gzip.compress(EVIL_PICKLE[5:])
    _, ctx = run(data, "model.pkl.gz")
    assert critical(ctx.findings)


def test_trailing_bytes_after_stream_are_reported() -> None:
    _, ctx = run(zlib.compress(BENIGN_PICKLE) + b"junk after")
    assert any(
        f.rule_id == "archive.malformed" and f.severity is Severity.LOW for f in ctx.findings
    )


def test_lz4_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _lz4(EVIL_PICKLE)
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    _, ctx = run(data)
    found = [f for f in ctx.findings if f.rule_id == "archive.unsupported"]
    assert found
    assert found[0].severity is Severity.HIGH
    assert "modelcrate[scan]" in found[0].message


def test_zlib_lookalike_protocol0_pickle_is_scanned_as_pickle() -> None:
    """'(S' passes the 2-byte zlib header check; the bytes must still reach the pickle scanner."""
    data = b"(S'x'\np0\ncos\nsystem\n(S'echo'\ntR."
    assert (data[0] * 256 + data[1]) % 31 == 0
    _, ctx = run(data, "model.pkl")
    assert critical(ctx.findings)


def test_inner_name_drops_the_compression_extension() -> None:
    _, ctx = run(gzip.compress(EVIL_PICKLE), "weights.pkl.gz")
    assert any(f.location.members == ("weights.pkl",) for f in ctx.findings)


def test_nested_gzip_in_gzip_is_bounded() -> None:
    data = EVIL_PICKLE
    for _ in range(10):
        data = gzip.compress(data)
    _, ctx = run(data, "deep.gz")
    assert any(f.rule_id == "archive.bomb" for f in ctx.findings)


def test_gzip_in_tar_in_zip_round_trip() -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("inner.pkl")
        info.size = len(EVIL_PICKLE)
        tf.addfile(info, io.BytesIO(EVIL_PICKLE))
    fmt, ctx = run(buf.getvalue(), "bundle.tar.gz")
    assert fmt == "gzip+tar"
    assert critical(ctx.findings)
