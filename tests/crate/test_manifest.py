"""crate.yaml: golden canonical bytes, digest rules, deterministic YAML, clear errors."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.crate.manifest import (
    ArtifactEntry,
    Manifest,
    ParitySummary,
    Provenance,
    Runtime,
    ScanSummary,
    Source,
    created_now,
    load_manifest,
    parse_manifest,
)
from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.errors import InputError


def golden() -> Manifest:
    sig = Signature(
        inputs=(Column("x", "float32"), Column("color", "string", ("blue", "red"))),
        outputs=(Output("label", "string"), Output("probabilities", "float32", (2,))),
        task="classification",
        classes=("no", "yes"),
    )
    return Manifest(
        name="golden",
        version="sha256:" + "0" * 64,
        created="2024-01-02T03:04:05Z",
        flavor="sklearn",
        source=Source(path="model.pkl", sha256="a" * 64, size=10, format="pickle"),
        artifacts=[ArtifactEntry(path="model/model.onnx", format="onnx", sha256="b" * 64, size=20)],
        signature=sig.to_dict(),
        runtime=Runtime(kind="onnxruntime", opset=17),
        scan=ScanSummary(
            verdict="INFO", counts={"CRITICAL": 0, "INFO": 2}, scanner_version="0.1.0"
        ),
        parity=ParitySummary(
            rows=50, tolerance=1e-4, max_abs_diff=1.5e-7, label_agreement=1.0, passed=True
        ),
        provenance=Provenance(modelcrate_version="0.1.0", converters={"skl2onnx": "1.17.0"}),
        lock_sha256="c" * 64,
    ).with_version()


GOLDEN_CANONICAL = (
    b'{"artifacts":[{"format":"onnx","path":"model/model.onnx","sha256":"'
    + b"b" * 64
    + b'","size":20}],"batching":{"max_batch_size":64,"max_latency_ms":2.0},'
    b'"flavor":"sklearn","lock_sha256":"' + b"c" * 64 + b'","name":"golden",'
    b'"parity":{"label_agreement":1.0,"max_abs_diff":1.5e-07,"passed":true,"rows":50,'
    b'"tolerance":0.0001},"provenance":{"converters":{"skl2onnx":"1.17.0"},'
    b'"modelcrate_version":"0.1.0"},"python":{"platform":"linux_x86_64","version":"3.11"},'
    b'"runtime":{"kind":"onnxruntime","opset":17},"scan":{"counts":{"CRITICAL":0,"INFO":2},'
    b'"scanner_version":"0.1.0","verdict":"INFO"},"schema_version":"modelcrate.crate/v1",'
    b'"signature":{"classes":["no","yes"],"extra":{},"inputs":[{"dtype":"float32","name":"x"},'
    b'{"categories":["blue","red"],"dtype":"string","name":"color"}],"outputs":[{"dtype":'
    b'"string","name":"label","shape":[]},{"dtype":"float32","name":"probabilities","shape":[2]}],'
    b'"task":"classification","tensor_dtype":"float32","tensor_input":false,"tensor_name":'
    b'"input"},"source":{"format":"pickle","path":"model.pkl","sha256":"' + b"a" * 64 + b'",'
    b'"size":10},"system_packages":[]}'
)
GOLDEN_VERSION = "sha256:" + hashlib.sha256(GOLDEN_CANONICAL).hexdigest()


def test_golden_canonical_bytes() -> None:
    m = golden()
    assert m.canonical_bytes() == GOLDEN_CANONICAL
    assert m.version == GOLDEN_VERSION == m.compute_version()


def test_version_and_created_are_not_in_the_digest() -> None:
    m = golden()
    later = m.model_copy(update={"created": "2030-01-01T00:00:00Z"})
    assert later.compute_version() == m.version
    assert b"created" not in m.canonical_bytes()
    assert m.version.encode() not in m.canonical_bytes()


def test_every_other_field_is_in_the_digest() -> None:
    m = golden()
    renamed = m.model_copy(update={"name": "other"})
    relocked = m.model_copy(update={"lock_sha256": "d" * 64})
    assert len({m.version, renamed.compute_version(), relocked.compute_version()}) == 3


def test_yaml_round_trip_is_deterministic(tmp_path: Path) -> None:
    m = golden()
    data = m.dump_yaml()
    assert data == golden().dump_yaml()
    assert data.startswith(b"schema_version: modelcrate.crate/v1\nname: golden\nversion: sha256:")
    (tmp_path / "crate.yaml").write_bytes(data)
    loaded = load_manifest(tmp_path, verify=True)
    assert loaded == m
    assert loaded.dump_yaml() == data
    assert loaded.signature_obj().classes == ("no", "yes")
    assert loaded.short_version == m.version[7:19]


def test_missing_and_invalid_manifests_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"crate\.yaml is missing") as exc:
        load_manifest(tmp_path)
    assert exc.value.path == str(tmp_path / "crate.yaml")
    assert exc.value.hint
    (tmp_path / "crate.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_manifest(tmp_path)
    (tmp_path / "crate.yaml").write_text("- a list\n")
    with pytest.raises(InputError, match="mapping"):
        load_manifest(tmp_path)
    bad = golden().model_dump(mode="json") | {"name": "Bad Name"}
    import yaml

    (tmp_path / "crate.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match="invalid at name") as exc:
        load_manifest(tmp_path)
    assert exc.value.path == str(tmp_path / "crate.yaml")


def test_unknown_fields_and_bad_paths_are_refused() -> None:
    doc = golden().model_dump(mode="json")
    with pytest.raises(InputError, match="surprise"):
        parse_manifest(_yaml(doc | {"surprise": 1}), path="crate.yaml")
    art = {"path": "../escape.onnx", "format": "onnx", "sha256": "b" * 64, "size": 1}
    with pytest.raises(InputError, match="artifacts"):
        parse_manifest(_yaml(doc | {"artifacts": [art]}), path="crate.yaml")
    with pytest.raises(InputError, match="signature"):
        parse_manifest(_yaml(doc | {"signature": {"inputs": "x"}}), path="crate.yaml")


def test_verify_detects_an_edited_manifest(tmp_path: Path) -> None:
    edited = golden().model_copy(update={"name": "edited"})
    (tmp_path / "crate.yaml").write_bytes(edited.dump_yaml())
    load_manifest(tmp_path)  # structurally fine
    with pytest.raises(InputError, match="does not match its version"):
        load_manifest(tmp_path, verify=True)


def test_created_honours_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert created_now() == "1970-01-02T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        created_now()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_manifest(data, path="crate.yaml")


def _yaml(doc: dict[str, object]) -> bytes:
    import yaml

    return yaml.safe_dump(doc).encode()
