"""Every scanner limit is a finding at or above the gate, never silent (issue 9 item 8).

Each limit is reached with a small ``Limits(...)`` override (or the module's own cap) so the
tests stay fast; what the limit kept from the scan must come out HIGH (the default gate), or
the policy's gate when that is higher.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelcrate.scan import Limits, Location, Policy, Severity, scan, scan_file
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding
from tests.scan.archivegen import Member, TarItem, build_tar, build_zip, npy_bytes
from tests.scan.test_formats_gguf import gguf, gstr
from tests.scan.test_formats_safetensors import GOOD, st_file

EVIL = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."
LIMIT_RULES = {"limits.exceeded", "archive.bomb"}


def run(
    data: bytes, name: str, limits: Limits | None = None, policy: Policy | None = None
) -> list[Finding]:
    ctx = ScanContext(limits or Limits(), policy or Policy())
    ctx.scan_blob(data, Location(name), 0, name=name)
    return ctx.findings


def limit_hits(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.rule_id in LIMIT_RULES]


def assert_at_gate(findings: list[Finding], gate: Severity = Severity.HIGH) -> None:
    hits = limit_hits(findings)
    assert hits, [(f.severity.name, f.rule_id, f.message) for f in findings]
    assert all(f.severity >= gate for f in hits), [(f.severity, f.message) for f in hits]


# --- the folder walk ------------------------------------------------------------------------


def test_folder_walk_limit_is_reported(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_text("x")
    report = scan(tmp_path, limits=Limits(max_file_list=3))
    assert len([f for f in report.files if f.format != "folder"]) == 3
    assert_at_gate(report.findings)
    assert report.failed(Severity.HIGH)


def test_folder_walk_limit_in_nested_folders_and_the_policy_gate(tmp_path: Path) -> None:
    """Variant: files spread over sub-folders; a policy gate of CRITICAL raises the finding."""
    for d in ("a", "b/c", "d"):
        (tmp_path / d).mkdir(parents=True)
        for i in range(3):
            (tmp_path / d / f"{i}.bin").write_bytes(b"\x00")
    report = scan(
        tmp_path, limits=Limits(max_file_list=4), policy=Policy(fail_on=Severity.CRITICAL)
    )
    assert_at_gate(report.findings, Severity.CRITICAL)
    assert str(tmp_path) in report.findings[-1].location.path


# --- containers -----------------------------------------------------------------------------


def test_entries_limits_zip_tar() -> None:
    zip_data = build_zip([Member(f"m{i}.txt", b"x") for i in range(10)])
    assert_at_gate(run(zip_data, "a.zip", Limits(max_entries=3)))
    tar_data = build_tar([TarItem(f"m{i}.txt", b"x") for i in range(10)])
    assert_at_gate(run(tar_data, "a.tar", Limits(max_entries=3)))


def test_member_size_limits() -> None:
    big = b"a" * 5000
    lim = Limits(max_member_bytes=1000)
    assert_at_gate(run(build_zip([Member("big.bin", big)]), "a.zip", lim))  # stored
    assert_at_gate(run(build_zip([Member("big.bin", big, method=8)]), "b.zip", lim))  # deflated
    assert_at_gate(run(build_tar([TarItem("big.bin", big)]), "a.tar", lim))
    assert_at_gate(run(gzip.compress(big), "a.gz", lim))


def test_zip_prefix_over_the_member_limit_is_reported() -> None:
    data = build_zip([Member("x.txt", b"x")], prefix=b"\x00" * 5000)
    found = run(data, "sfx.zip", Limits(max_member_bytes=1000))
    assert_at_gate(found)
    assert any("before the first zip member" in f.message for f in found)


def test_inflated_budget_and_depth() -> None:
    data = build_zip([Member(f"z{i}.bin", b"\x00" * 4000, method=8) for i in range(5)])
    assert_at_gate(run(data, "a.zip", Limits(max_inflated_bytes=6000)))
    nested = build_zip([Member("in.zip", build_zip([Member("in2.zip", build_zip([]))]))])
    assert_at_gate(run(nested, "n.zip", Limits(max_depth=1)))


# --- pickles --------------------------------------------------------------------------------


def test_pickles_per_stream_limit() -> None:
    benign = pickle.dumps([1, 2], protocol=2)
    data = benign * 4 + EVIL  # the payload sits past the limit
    found = run(data, "m.pkl", Limits(max_pickles_per_stream=2))
    assert_at_gate(found)


@pytest.mark.parametrize(
    "limits",
    [Limits(max_pickle_ops=20), Limits(max_stack_depth=5), Limits(max_memo_entries=3)],
    ids=["ops", "stack", "memo"],
)
def test_pickle_machine_limits(limits: Limits) -> None:
    data = pickle.dumps([[[[[[[i, str(i)] for i in range(20)]]]]]], protocol=2)
    assert_at_gate(run(data, "m.pkl", limits))


# --- headers, strings, configs --------------------------------------------------------------


def test_safetensors_header_and_trailing_limits() -> None:
    data = st_file(GOOD, b"\0" * 20)
    assert_at_gate(run(data, "m.safetensors", Limits(max_header_bytes=10)))
    trailing = st_file(GOOD, b"\0" * 20 + b"\x00" * 5000)
    found = run(trailing, "t.safetensors", Limits(max_member_bytes=1000))
    assert_at_gate(found)
    assert any("trailing bytes" in f.message for f in limit_hits(found))


def test_npy_header_object_array_and_trailing_limits() -> None:
    obj = npy_bytes("'|O'", (1,), EVIL)
    assert_at_gate(run(obj, "a.npy", Limits(max_member_bytes=8)))
    assert_at_gate(run(obj, "a.npy", Limits(max_header_bytes=16)))
    numeric = npy_bytes("'<f4'", (2,), b"\x00" * 8 + b"\x01" * 5000)
    assert_at_gate(run(numeric, "b.npy", Limits(max_member_bytes=1000)))


def test_npy_headers_numpy_accepts_are_parsed_not_refused() -> None:
    """A 1.1 MiB (padded) header and deep brackets: numpy reads them with allow_pickle=True,
    so the object pickle inside must be scanned (it was one MEDIUM before)."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + " " * (1_100_000)
    text = (header + "\n").encode("latin-1")
    padded = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text + EVIL
    found = run(padded, "a.npy")
    assert any(f.severity is Severity.CRITICAL for f in found)
    # a header that is long without padding (a structured dtype of 70 000 fields, one of them
    # an object) is reported, not parsed
    fields = ", ".join(f"('f{i}', '<f4')" for i in range(70_000)) + ", ('o', '|O')"
    dense = "{'descr': [" + fields + "], 'fortran_order': False, 'shape': (1,), }"
    assert len(dense) > 1 << 20
    text = (dense + "\n").encode("latin-1")
    too_long = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text + EVIL
    assert_at_gate(run(too_long, "b.npy"))


def test_gguf_string_limit() -> None:
    data = gguf([gstr("general.name") + struct.pack("<I", 8) + gstr("x" * 500)], [])
    found = run(data, "m.gguf", Limits(max_string_bytes=100))
    assert_at_gate(found)


def test_json_and_yaml_size_limits() -> None:
    cfg = json.dumps({"_target_": "os.system", "pad": "x" * 2000}).encode()
    assert_at_gate(run(cfg, "config.json", Limits(max_string_bytes=100)))
    yml = b"_target_: os.system\npad: " + b"x" * 2000 + b"\n"
    assert_at_gate(run(yml, "config.yaml", Limits(max_string_bytes=100)))


def test_long_chat_template_is_at_the_gate() -> None:
    meta = {"chat_template": "{{ messages }}" + " " * (1 << 20)}
    found = run(st_file({"__metadata__": meta, **GOOD}, b"\0" * 20), "m.safetensors")
    assert_at_gate(found)


def test_onnx_external_location_longer_than_the_cap() -> None:
    from tests.scan.test_formats_onnx import external_tensor, gnode, graph
    from tests.scan.test_formats_wire import fl, onnx_model

    # "aaa...a/../../etc/passwd": cut at the old 4 KiB read, it looked like a path inside
    location = "a" * 70_000 + "/../../etc/passwd"
    data = onnx_model(graph(gnode("Identity"), fl(5, external_tensor(location))))
    assert_at_gate(run(data, "m.onnx"))


def test_h5_search_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcrate.scan import keras_scan

    monkeypatch.setattr(keras_scan, "MAX_CANDIDATES", 1)
    body = b"".join(b'xx{"class_name": "Dense", "config": {}}' for _ in range(10))
    data = b"\x89HDF\r\n\x1a\n" + body
    assert_at_gate(run(data, "m.h5"))


def test_7z_entries_limit(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    archive = tmp_path / "m.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        for i in range(5):
            z.writestr(b"x", f"m{i}.txt")
    assert_at_gate(run(archive.read_bytes(), "m.7z", Limits(max_entries=2)))


def test_cli_fail_on_critical_still_fails_on_a_limit(tmp_path: Path) -> None:
    """--fail-on is the gate: a limit reached is reported at it (here CRITICAL)."""
    from modelcrate.cli import main

    meta = {"chat_template": "{{ messages }}" + " " * (1 << 20)}
    p = tmp_path / "m.safetensors"
    p.write_bytes(st_file({"__metadata__": meta, **GOOD}, b"\0" * 20))
    assert main(["scan", str(p), "--fail-on", "critical"]) == 1
    assert main(["scan", str(p), "--fail-on", "critical", "--format", "json"]) == 1


def test_real_files_reach_no_limit(tmp_path: Path) -> None:
    """No new false alarm: ordinary files written by real libraries hit no limit."""
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "hello")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        info = tarfile.TarInfo("x.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "a.tar.gz").write_bytes(tbuf.getvalue())
    np.save(tmp_path / "a.npy", np.arange(100))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": list(range(1000))}, protocol=5))
    for p in sorted(tmp_path.iterdir()):
        assert not limit_hits(scan_file(p).findings), p
