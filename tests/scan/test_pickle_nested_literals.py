"""A call that deserializes a literal the scan fully analysed is judged by what the literal
holds (issue 9, item 12); a literal that could not be fully analysed keeps it at HIGH or above.
The rule covers the loader libraries write (``torch.storage._load_from_bytes``); ``pickle.loads``
of a literal is never written by a save call and stays CRITICAL.

``pickle.dumps`` of a tensor stores its storage as ``torch.storage._load_from_bytes(b'<legacy
torch.save bytes>')``: benign, and loadable by the restricted unpickler with the same rules.
The same call with a payload, a zip (TorchScript dispatch), text, a computed argument or a
forged storage size is not.
"""

from __future__ import annotations

import io
import pickle

import pytest

from modelcrate.scan.findings import Severity
from tests.scan.gatecheck import load_in_child, scan_blocks
from tests.scan.picklegen import P, call, glob, lit, rules, scan_bytes, symbols, worst

torch = pytest.importorskip("torch")


def _legacy(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _zip(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _payload(proto: int = 2) -> bytes:
    head = b"\x80" + bytes([proto])
    return head + call(glob("os", "system"), lit("touch /tmp/modelcrate-nested-pwned")) + P.STOP


def _load_from_bytes(arg: bytes) -> bytes:
    return P.PROTO4 + call(glob("torch.storage", "_load_from_bytes"), arg) + P.STOP


def _loads(arg: bytes, via: tuple[str, str] = ("pickle", "loads")) -> bytes:
    return P.PROTO4 + call(glob(*via), arg) + P.STOP


def _forged_numel() -> bytes:
    """A legacy file whose storage id claims 10**12 elements (its data holds 4)."""
    legacy = _legacy(torch.arange(4, dtype=torch.float32))
    forged = legacy.replace(b"cpuq\x04K\x04", b"cpuq\x04\x8a\x06\x00\x10\xa5\xd4\xe8\x00", 1)
    assert forged != legacy
    return _load_from_bytes(lit(forged))


BENIGN = {
    "tensor_p2": pickle.dumps(torch.arange(6.0), protocol=2),
    "tensor_p0": pickle.dumps(torch.ones(2, dtype=torch.float16), protocol=0),
    "tensor_p5": pickle.dumps(torch.nn.Parameter(torch.zeros(3)), protocol=5),
    # storages over 64 KiB: the literal stays in the file (text at protocols 0-2), still exact
    "big_tensor_p1": pickle.dumps(torch.ones(40_000), protocol=1),
    "big_tensor_p3": pickle.dumps(torch.ones(40_000), protocol=3),
    "load_from_bytes_literal": _load_from_bytes(lit(_legacy(torch.arange(3)))),
}
ATTACKS = {
    "pickle_loads_payload": _loads(lit(_payload())),
    "_pickle_loads_payload": _loads(lit(_payload(4)), ("_pickle", "loads")),
    "load_from_bytes_payload": _load_from_bytes(lit(_payload())),
    "load_from_bytes_zip": _load_from_bytes(lit(_zip(torch.arange(3)))),
    "load_from_bytes_garbage": _load_from_bytes(lit(b"\x80\x02K\x01" + b"\xff" * 16)),
    "load_from_bytes_text": _load_from_bytes(lit(_legacy(torch.arange(2)).decode("latin-1"))),
    "load_from_bytes_bytearray": _load_from_bytes(
        call(glob("builtins", "bytearray"), lit(_legacy(torch.arange(2))))
    ),
    "load_from_bytes_two_args": P.PROTO4
    + call(glob("torch.storage", "_load_from_bytes"), lit(b"x"), lit(b"y"))
    + P.STOP,
    "load_from_bytes_forged_numel": _forged_numel(),
    "dill_loads_benign_literal": _loads(lit(pickle.dumps(1)), ("dill", "loads")),
    # no library's save call writes pickle.loads of a literal: a hiding technique, kept
    # CRITICAL whatever the literal holds (picklescan's malicious13 samples)
    "pickle_loads_benign_literal": _loads(lit(pickle.dumps({"a": [1, 2]}, protocol=4))),
    "_pickle_loads_benign_literal": _loads(lit(b"I12345\n."), ("_pickle", "loads")),
    "pickle_load_of_a_path": _loads(lit("model.pkl"), ("pickle", "load")),
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, object]:
    return load_in_child({**BENIGN, **ATTACKS})


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_fully_analysed_benign_literal_passes_scan_and_load(
    name: str, loaded: dict[str, object]
) -> None:
    findings = scan_bytes(BENIGN[name])
    assert not scan_blocks(BENIGN[name]), [(f.severity.name, f.message) for f in findings]
    nested = [f for f in findings if f.rule_id == "pickle.nested"]
    assert nested, "the literal was scanned as a nested pickle"
    assert loaded[name] == "loaded"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_other_literals_and_loaders_stay_blocked(name: str, loaded: dict[str, object]) -> None:
    findings = scan_bytes(ATTACKS[name])
    assert scan_blocks(ATTACKS[name]), [(f.severity.name, f.message) for f in findings]
    assert loaded[name] != "loaded", name


def test_a_payload_in_the_literal_is_reported_at_its_own_severity() -> None:
    for name in ("pickle_loads_payload", "load_from_bytes_payload"):
        findings = scan_bytes(ATTACKS[name])
        assert "os.system" in symbols(findings, Severity.CRITICAL)
        assert "pickle.nested" in rules(findings, Severity.CRITICAL)


def test_a_literal_that_was_not_fully_analysed_keeps_the_loader_at_high() -> None:
    for name in ("load_from_bytes_zip", "load_from_bytes_garbage", "load_from_bytes_text"):
        findings = scan_bytes(ATTACKS[name])
        loader = [f for f in findings if f.symbol == "torch.storage._load_from_bytes"]
        assert loader
        assert max(f.severity for f in loader) >= Severity.HIGH, name


def test_forged_storage_size_is_reported() -> None:
    messages = [f.message for f in scan_bytes(ATTACKS["load_from_bytes_forged_numel"])]
    assert any("claims 1000000000000 elements" in m for m in messages), messages


def test_benign_tensor_pickle_is_info_only() -> None:
    assert worst(scan_bytes(BENIGN["tensor_p2"])) == Severity.INFO
