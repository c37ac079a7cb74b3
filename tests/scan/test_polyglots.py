"""Format confusion (issue 9 item 4, issue 10 class 1): a file that is several formats at once.

Each loader reads its own format from the same bytes -- a pickle loader from byte 0, a zip
reader from the end, tar from a checksummed header, safetensors from an 8-byte length -- so a
polyglot is analysed as every format whose detector accepts it, and a dangerous global found by
any of the readings must come out CRITICAL. Every sample is built from bytes (or written by the
real library) and checked statically with :mod:`pickletools`; nothing here is ever unpickled.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from modelcrate.scan import Severity, scan_file
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location
from modelcrate.scan.sniff import sniff_all
from tests.scan.archivegen import Member, build_zip, torch_zip

SYSTEM_P0 = b"cos\nsystem\n(S'id'\ntR."  # protocol 0: os.system('id')


class _Reduce:
    """Pickles (with the real pickle module) as a call of ``func(*args)``; never unpickled."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def dumps_call(func: object, *args: object, protocol: int = 2) -> bytes:
    return pickle.dumps(_Reduce(func, *args), protocol=protocol)


def pickle_ops(data: bytes) -> list[str]:
    """The opcodes a pickle loader runs from byte 0 up to STOP (static; raises if invalid)."""
    names = [op.name for op, _arg, _pos in pickletools.genops(io.BytesIO(data))]
    assert names[-1] == "STOP"
    return names


def findings_of(data: bytes, name: str) -> tuple[str, list[Finding]]:
    ctx = ScanContext()
    fmt = ctx.scan_blob(data, Location(name), 0, name=name)
    return fmt, ctx.findings


def critical_symbols(findings: list[Finding]) -> set[str]:
    return {f.symbol or "" for f in findings if f.severity is Severity.CRITICAL}


# --- pickle + safetensors -------------------------------------------------------------------


def test_protocol0_pickle_whose_byte_8_is_brace_is_scanned_as_pickle() -> None:
    data = b"(S'abcde{\"x\"'\np0\n0" + SYSTEM_P0
    assert data[8:10] == b'{"'
    assert "REDUCE" in pickle_ops(data)
    assert "safetensors" in sniff_all(data, "model.safetensors")
    _, found = findings_of(data, "model.safetensors")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_protocol1_binary_pickle_with_safetensors_header_shape() -> None:
    """Variant: binary opcodes without a PROTO header, builtins.exec via a real pickle call."""
    evil = dumps_call(exec, "import os", protocol=1)  # real pickle module output, protocol 1
    head = b"(U\x10" + b"abcde" + b'{"' + b"x" * 9 + b"1"  # MARK, 16-byte string, POP_MARK
    data = head + evil
    assert data[8:10] == b'{"'
    assert "REDUCE" in pickle_ops(data)
    assert sniff_all(data)[:2] == ("pickle", "safetensors")
    _, found = findings_of(data, "weights.safetensors")
    assert "builtins.exec" in critical_symbols(found)
    assert any(f.rule_id == "safetensors.malformed" for f in found)


# --- pickle + tar ---------------------------------------------------------------------------


def _tar_header_fix(data: bytearray) -> None:
    """Recompute the first tar header's checksum, as tarfile writes it."""
    data[148:156] = b"%06o\x00 " % (sum(data[:148]) + 8 * ord(" ") + sum(data[156:512]))


def test_pickle_with_ustar_at_257_is_scanned_as_pickle() -> None:
    """issue 10 class 1: `ustar` at offset 257 (no valid tar header) made it a tar only."""
    pad = b"u" * 300
    data = bytearray(b"\x80\x02X" + struct.pack("<I", len(pad)) + pad + b"0")
    data[257:262] = b"ustar"
    data += dumps_call(os.system, "id", protocol=2)[2:]  # the rest of a real protocol-2 pickle
    assert "REDUCE" in pickle_ops(bytes(data))
    assert sniff_all(bytes(data)) == ("pickle", "tar")
    _, found = findings_of(bytes(data), "model.pt")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_valid_tar_that_is_also_a_pickle_is_scanned_as_both() -> None:
    """Variant: tarfile really opens it (valid checksum) and a member holds another payload;
    the pickle at byte 0 swallows the tar header and member in one BINBYTES and then calls."""
    member = dumps_call(exec, "print(1)", protocol=4)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("placeholder-name")
        info.size = len(member)
        tf.addfile(info, io.BytesIO(member))
    tar = bytearray(buf.getvalue())
    covered = 512 + -(-len(member) // 512) * 512  # header and member blocks
    tar[0:100] = (b"\x80\x03B" + struct.pack("<I", covered - 7)).ljust(100, b"\x00")
    _tar_header_fix(tar)
    tail = b"0" + dumps_call(os.system, "id", protocol=3)[2:]
    data = bytes(tar[:covered]) + tail + bytes(tar[covered:])
    assert "REDUCE" in pickle_ops(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:  # what a tar loader sees
        assert [m.size for m in tf.getmembers()] == [len(member)]
    assert set(sniff_all(data)) == {"pickle", "tar"}
    _, found = findings_of(data, "checkpoint.tar")
    crit = critical_symbols(found)
    assert {"os.system", "posix.system"} & crit
    assert "builtins.exec" in crit


# --- pickle + zlib --------------------------------------------------------------------------


def _pickle_zlib(payload: bytes) -> bytes:
    """MARK FROZENSET (a zlib header), MARK (a stored block header), SHORT_BINBYTES over the
    block's LEN/NLEN, POP_MARK, then ``payload``: a pickle and a complete zlib stream."""
    n = 2
    length = 0x43 | n << 8
    head = b"(\x91(" + b"C" + bytes([n]) + struct.pack("<H", length ^ 0xFFFF)
    body = (b"1" + payload).ljust(length, b"\x00")
    out = head[:3] + struct.pack("<H", length) + head[5:] + body
    out += b"\x01\x00\x00\xff\xff" + struct.pack(">I", zlib.adler32(body))
    return out


def test_pickle_that_is_also_a_zlib_stream_is_scanned_as_pickle() -> None:
    data = _pickle_zlib(SYSTEM_P0)
    assert zlib.decompress(data)[:1] == b"1"  # a real zlib stream
    assert "REDUCE" in pickle_ops(data)
    assert set(sniff_all(data)) == {"pickle", "zlib"}
    _, found = findings_of(data, "model.joblib")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_pickle_zlib_variant_with_real_protocol4_payload(tmp_path: Path) -> None:
    """Variant: the payload is a real protocol-4 pickle (framed) of subprocess.Popen."""
    import subprocess

    evil = dumps_call(subprocess.Popen, ["id"], protocol=4)
    data = _pickle_zlib(evil[2:])  # without its PROTO header: the stream is already open
    assert "REDUCE" in pickle_ops(data)
    path = tmp_path / "model.z"
    path.write_bytes(data)
    report = scan_file(path)
    assert "subprocess.Popen" in critical_symbols(report.findings)


# --- pickle + zip ---------------------------------------------------------------------------


def _zip_with(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, content)
    return buf.getvalue()


def test_pickle_with_a_zip_appended_is_scanned_as_both(tmp_path: Path) -> None:
    """pickle.load reads byte 0, zipfile the end: a benign pickle hides an evil zip member."""
    benign = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)
    data = benign + _zip_with("archive/data.pkl", dumps_call(os.system, "id"))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # what a zip loader sees
        assert zf.namelist() == ["archive/data.pkl"]
    assert sniff_all(data) == ("pickle", "zip")
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    report = scan_file(path)
    assert report.format == "pickle"
    assert {"os.system", "posix.system"} & critical_symbols(report.findings)


def test_evil_pickle_with_benign_zip_appended() -> None:
    """Variant: the payload is the pickle at byte 0, the zip (a torch layout) is the decoy."""
    evil = dumps_call(eval, "1+1", protocol=3)
    data = evil + torch_zip(pickle.dumps({"a": 1}, protocol=2))
    assert set(sniff_all(data)) == {"pickle", "zip"}
    _, found = findings_of(data, "model.pt")
    assert "builtins.eval" in critical_symbols(found)


# --- pickle + gguf --------------------------------------------------------------------------


def test_gguf_magic_that_is_also_a_pickle() -> None:
    """`G` is BINFLOAT: it eats the magic's 8 bytes; the opcodes after it form the call."""
    data = b"GGUF\x03\x00\x00\x00" + b"\x00" + SYSTEM_P0 + b"\x00" * 64
    assert "REDUCE" in pickle_ops(data)
    assert sniff_all(data) == ("gguf", "pickle")
    fmt, found = findings_of(data, "model.gguf")
    assert fmt == "gguf"
    assert {"os.system", "posix.system"} & critical_symbols(found)
    assert any(f.rule_id == "gguf.malformed" for f in found)


# --- pickle + HDF5 (user block) -------------------------------------------------------------


def test_pickle_with_an_hdf5_superblock_at_512_is_scanned_as_both() -> None:
    """h5py opens a file whose superblock sits after a 512-byte user block; a pickle loader
    runs the bytes before it. A Keras Lambda in the HDF5 config must still be found."""
    h5py = pytest.importorskip("h5py")
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "Lambda", "config": {"name": "l", "function": ["code", None, None]}}
            ]
        },
    }
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512) as f:
        f.attrs["model_config"] = json.dumps(config)
    data = bytearray(buf.getvalue())
    pickled = dumps_call(os.system, "id", protocol=2)
    data[: len(pickled)] = pickled  # the user block is free for the application
    with h5py.File(io.BytesIO(bytes(data)), "r") as f:  # what Keras sees
        assert "Lambda" in f.attrs["model_config"]
    assert set(sniff_all(bytes(data))) == {"pickle", "hdf5"}
    _, found = findings_of(bytes(data), "model.h5")
    assert {"os.system", "posix.system"} & critical_symbols(found)
    assert any(f.rule_id == "keras.lambda" for f in found)


# --- JSON and nested ------------------------------------------------------------------------


def test_json_config_with_a_zip_appended() -> None:
    """A JSON file (sniffed as a config) that a zip reader opens from its end."""
    data = b'{"architectures": ["Net"]}\n' + _zip_with("x.pkl", SYSTEM_P0)
    assert set(sniff_all(data, "config.json")) == {"json", "zip"}
    _, found = findings_of(data, "config.json")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_pickle_named_like_a_config_is_scanned_as_pickle() -> None:
    data = dumps_call(os.system, "id", protocol=0)
    for name in ("config.json", "params.yaml", "model.onnx"):
        assert "pickle" in sniff_all(data, name)
        _, found = findings_of(data, name)
        assert {"os.system", "posix.system"} & critical_symbols(found), name


def test_polyglot_inside_an_archive_member() -> None:
    """A pickle+zlib polyglot as the data.pkl of a torch zip is still read as a pickle."""
    data = torch_zip(_pickle_zlib(SYSTEM_P0))
    _, found = findings_of(data, "model.pt")
    assert any(
        f.severity is Severity.CRITICAL and "archive/data.pkl" in f.location.members for f in found
    )
    zipped = build_zip([Member("w.safetensors", b"(S'abcde{\"x\"'\np0\n0" + SYSTEM_P0)])
    _, found = findings_of(zipped, "bundle.zip")
    assert {"os.system", "posix.system"} & critical_symbols(found)


# --- a pickle the probe cannot see into -----------------------------------------------------


@pytest.mark.parametrize("op", [b"X", b"B", b"\x8e"])
def test_first_string_longer_than_the_probe_window(op: bytes) -> None:
    """A pickle whose first opcode is a >64 KiB string: the probe sees only the string, a
    pickle loader reads past it and runs the call (issue 10 class 2, the window case)."""
    text = b"w" * 100_000
    size = struct.pack("<Q" if op == b"\x8e" else "<I", len(text))
    data = op + size + text + b"0" + SYSTEM_P0
    assert "REDUCE" in pickle_ops(data)
    assert sniff_all(data, "weights.bin") == ("pickle",)
    _, found = findings_of(data, "weights.bin")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_first_text_line_longer_than_the_probe_window() -> None:
    """Variant: a protocol-0 STRING whose line is longer than the window (pickle.dumps output)."""
    data = pickle.dumps("q" * 100_000, protocol=0)[:-1] + b"0" + SYSTEM_P0  # drop its STOP
    assert data[:1] in (b"S", b"V")
    assert "REDUCE" in pickle_ops(data)
    _, found = findings_of(data, "blob")
    assert {"os.system", "posix.system"} & critical_symbols(found)


def test_random_binary_is_still_unknown() -> None:
    import random

    rng = random.Random(7)
    for first in (b"X", b"B", b"S"):
        data = first + bytes(rng.getrandbits(8) for _ in range(200_000))
        assert sniff_all(data) == ("unknown",)


# --- no new false alarms, and the common case stays cheap -----------------------------------


def _real_files(tmp_path: Path) -> dict[str, Path]:
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file

    m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    out: dict[str, Path] = {}

    def path(name: str) -> Path:
        out[name] = tmp_path / name
        return out[name]

    torch.save(m.state_dict(), path("sd.pt"))
    torch.save(m.state_dict(), path("legacy.pt"), _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path("m.safetensors"))
    arr = {"a": np.arange(1000, dtype=np.float32)}
    for comp in (0, "zlib", "gzip", "bz2", "xz", "lzma"):
        joblib.dump(arr, path(f"j-{comp}.joblib"), compress=comp)
    np.save(path("a.npy"), np.ones((4, 4)))
    np.savez_compressed(path("a.npz"), a=np.arange(10), b=np.zeros(3))
    for proto in range(6):
        path(f"p{proto}.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.5], "n": "x"}, proto))
    return out


def test_real_library_files_are_not_polyglots(tmp_path: Path) -> None:
    for name, p in _real_files(tmp_path).items():
        report = scan_file(p)
        assert not [f for f in report.findings if f.rule_id == "format.polyglot"], name
        assert report.verdict is None or report.verdict < Severity.HIGH, (name, report.findings)


def test_safetensors_and_zip_never_pay_for_a_pickle_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcrate.scan import context

    calls: list[str] = []
    monkeypatch.setitem(context.SCANNERS, "pickle", "tests.scan.test_polyglots:_spy_pickle")
    _SPY.clear()
    files = _real_files(tmp_path)
    for name in ("m.safetensors", "a.npz"):
        scan_file(files[name])
        calls.extend(_SPY)
    assert calls == []
    scan_file(files["sd.pt"])  # its data.pkl member is a pickle: scanned as one
    assert _SPY == ["sd/data.pkl"]


_SPY: list[str] = []


def _spy_pickle(data: bytes, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    _SPY.append("/".join(loc.members))
    return "pickle"
