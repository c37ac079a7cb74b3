"""The crate SBOM: CycloneDX 1.5 (checked against the official schema), deterministic, complete.

The schema is the one ``cyclonedx-python-lib`` ships (``cyclonedx/schema/_res/bom-1.5``), used
through its strict JSON validator; purls are parsed back with ``packageurl-python``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from modelcrate.crate.locked import parse_lock
from modelcrate.crate.manifest import Manifest
from modelcrate.crate.sbom import SPEC_VERSION, crate_sbom, sbom_json, sbom_problem
from tests.crate.helpers import manifest_for
from tests.image.e2e_env import IrisCrate

H = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(8)]
# Shaped like `uv pip compile --generate-hashes`: continuation lines, several hashes, `# via`
# in both spellings, a direct requirement, extras, a marker and a name with "_" and capitals.
LOCK = f"""# requirements.lock (test)
# Python 3.11, x86_64-manylinux_2_28; resolved by uv with hashes.
fastapi==0.115.0 \\
    --hash=sha256:{H[0]}
    # via -r requirements.in
numpy==2.0.0 \\
    --hash=sha256:{H[1]} \\
    --hash=sha256:{H[2]}
    # via
    #   -r requirements.in
    #   onnxruntime
onnxruntime==1.20.0 \\
    --hash=sha256:{H[3]}
    # via -r requirements.in
Typing_Extensions==4.12.2 ; python_version < "3.13" \\
    --hash=sha256:{H[4]}
    # via
    #   -c constraints.txt
    #   fastapi
    #   pydantic
pydantic==2.9.0 \\
    --hash=sha256:{H[5]}
    # via fastapi
uvicorn[standard]==0.30.0 \\
    --hash=sha256:{H[6]}
    # via -r requirements.in
""".encode()


def validate(doc: bytes | dict[str, Any]) -> None:
    text = doc.decode() if isinstance(doc, bytes) else json.dumps(doc)
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert error is None, str(error)


@pytest.fixture
def manifest() -> Manifest:
    return manifest_for("iris", b"model bytes", lock=LOCK)


def test_valid_cyclonedx_1_5(manifest: Manifest) -> None:
    data = sbom_json(manifest, LOCK)
    validate(data)
    doc = json.loads(data)
    assert (doc["bomFormat"], doc["specVersion"], doc["version"]) == ("CycloneDX", "1.5", 1)
    assert SPEC_VERSION == "1.5"


def test_the_validator_rejects_what_the_schema_forbids(manifest: Manifest) -> None:
    """The check is real: a component type outside the 1.5 enum and a bad serial both fail."""
    doc = crate_sbom(manifest, LOCK)
    doc["components"][0]["type"] = "model"
    with pytest.raises(AssertionError, match="is not one of"):
        validate(doc)
    doc = crate_sbom(manifest, LOCK)
    doc["serialNumber"] = "not-a-urn"
    with pytest.raises(AssertionError):
        validate(doc)


def test_deterministic_and_content_addressed(manifest: Manifest) -> None:
    first = sbom_json(manifest, LOCK)
    assert sbom_json(manifest, LOCK) == first
    doc = json.loads(first)
    serial = doc["serialNumber"]
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", serial)
    assert uuid.UUID(serial.removeprefix("urn:uuid:")).version == 5
    assert doc["metadata"]["timestamp"] == manifest.created
    assert list(json.loads(first)) == sorted(doc)  # sorted keys
    # Another lock: another serial number. Another build time: same serial, new timestamp.
    other_lock = LOCK.replace(b"fastapi==0.115.0", b"fastapi==0.115.1")
    assert json.loads(sbom_json(manifest, other_lock))["serialNumber"] != serial
    later = manifest.model_copy(update={"created": "2030-01-01T00:00:00Z"})
    assert json.loads(sbom_json(later, LOCK))["serialNumber"] == serial
    assert json.loads(sbom_json(later, LOCK))["metadata"]["timestamp"] == "2030-01-01T00:00:00Z"


def test_every_locked_package_with_purl_and_hashes(manifest: Manifest) -> None:
    doc = crate_sbom(manifest, LOCK)
    libs = {c["name"]: c for c in doc["components"] if c["type"] == "library"}
    locked = parse_lock(LOCK)
    assert sorted(libs) == sorted(p.key for p in locked)
    for p in locked:
        comp = libs[p.key]
        assert comp["version"] == p.version
        assert comp["purl"] == comp["bom-ref"] == f"pkg:pypi/{p.key}@{p.version}"
        purl = PackageURL.from_string(comp["purl"])
        assert (purl.type, purl.name, purl.version) == ("pypi", p.key, p.version)
        assert comp["hashes"] == [{"alg": "SHA-256", "content": h} for _, h in p.hashes]
    assert libs["numpy"]["hashes"] == [
        {"alg": "SHA-256", "content": h} for h in sorted([H[1], H[2]])
    ]
    assert libs["typing-extensions"]["purl"] == "pkg:pypi/typing-extensions@4.12.2"
    assert {"name": "modelcrate:extras", "value": "standard"} in libs["uvicorn"]["properties"]


def test_model_artifacts_and_the_crate(manifest: Manifest) -> None:
    doc = crate_sbom(manifest, LOCK)
    (model,) = [c for c in doc["components"] if c["type"] == "machine-learning-model"]
    art = manifest.artifacts[0]
    assert model["name"] == "model/model.onnx"
    assert model["hashes"] == [{"alg": "SHA-256", "content": art.sha256}]
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props == {
        "modelcrate:format": "onnx",
        "modelcrate:path": "model/model.onnx",
        "modelcrate:size": str(art.size),
    }
    params = model["modelCard"]["modelParameters"]
    assert params["task"] == "classification"
    assert next(i["format"] for i in params["inputs"]) == "sepal_length: float32"
    assert {"format": "probabilities: float32[3]"} in params["outputs"]
    (source,) = model["pedigree"]["ancestors"]
    assert source["hashes"][0]["content"] == manifest.source.sha256
    crate = doc["metadata"]["component"]
    assert (crate["name"], crate["version"], crate["type"]) == (
        "iris",
        manifest.version,
        "application",
    )
    crate_props = {p["name"]: p["value"] for p in crate["properties"]}
    assert crate_props["modelcrate:lock_sha256"] == hashlib.sha256(LOCK).hexdigest()
    assert crate_props["modelcrate:runtime"] == "onnxruntime"
    assert doc["metadata"]["tools"]["components"][0]["name"] == "modelcrate"


def test_dependency_graph_from_the_lock(manifest: Manifest) -> None:
    doc = crate_sbom(manifest, LOCK)
    deps = {d["ref"]: d["dependsOn"] for d in doc["dependencies"]}
    crate_ref = doc["metadata"]["component"]["bom-ref"]
    assert deps[crate_ref] == sorted(
        [
            "crate-file:model/model.onnx",
            "pkg:pypi/fastapi@0.115.0",
            "pkg:pypi/numpy@2.0.0",
            "pkg:pypi/onnxruntime@1.20.0",
            "pkg:pypi/uvicorn@0.30.0",
        ]
    )
    assert deps["pkg:pypi/onnxruntime@1.20.0"] == ["pkg:pypi/numpy@2.0.0"]
    assert deps["pkg:pypi/fastapi@0.115.0"] == [
        "pkg:pypi/pydantic@2.9.0",
        "pkg:pypi/typing-extensions@4.12.2",
    ]
    assert deps["pkg:pypi/pydantic@2.9.0"] == ["pkg:pypi/typing-extensions@4.12.2"]
    refs = {c["bom-ref"] for c in doc["components"]} | {crate_ref}
    assert set(deps) == refs  # every component appears, and only those
    assert all(set(d) <= refs for d in deps.values())


def test_sbom_problem_compares_facts_not_bytes(manifest: Manifest) -> None:
    data = sbom_json(manifest, LOCK)
    assert sbom_problem(data, manifest, LOCK) is None
    compact = json.dumps(json.loads(data), separators=(",", ":")).encode()
    assert sbom_problem(compact, manifest, LOCK) is None  # another layout is fine
    assert "not JSON" in (sbom_problem(b"{", manifest, LOCK) or "")
    assert "not a CycloneDX" in (sbom_problem(b"[]", manifest, LOCK) or "")
    other = manifest_for("other", b"model bytes", lock=LOCK)
    assert "another crate" in (sbom_problem(sbom_json(other, LOCK), manifest, LOCK) or "")
    doc = json.loads(data)
    doc["components"][0]["hashes"][0]["content"] = "0" * 64
    tampered = json.dumps(doc).encode()
    assert "components differ" in (sbom_problem(tampered, manifest, LOCK) or "")
    doc = json.loads(data)
    doc["components"].pop()
    assert "components differ" in (sbom_problem(json.dumps(doc).encode(), manifest, LOCK) or "")


def test_lock_parser_refuses_unpinned_lines() -> None:
    with pytest.raises(ValueError, match=r"line 2: .*not a pinned requirement"):
        parse_lock(b"# header\nnumpy>=2 \\\n    --hash=sha256:" + H[0].encode() + b"\n")
    with pytest.raises(ValueError, match="wrong length"):
        parse_lock(b"numpy==2.0.0 --hash=sha256:abcd\n")
    assert parse_lock(b"# only comments\n\n--index-url https://example.org/simple\n") == ()


def test_the_sbom_of_a_real_crate(iris_crate: IrisCrate) -> None:
    """A crate built for real (uv lock, ~30 packages, hundreds of wheel hashes) validates."""
    from modelcrate.crate.manifest import load_manifest

    data = (iris_crate.crate_dir / "sbom.cdx.json").read_bytes()
    validate(data)
    lock = (iris_crate.crate_dir / "requirements.lock").read_bytes()
    manifest = load_manifest(iris_crate.crate_dir)
    assert data == sbom_json(manifest, lock)
    doc = json.loads(data)
    names = {c["name"] for c in doc["components"] if c["type"] == "library"}
    assert {"onnxruntime", "numpy", "fastapi", "uvicorn", "pydantic"} <= names
    hashes = sum(len(c["hashes"]) for c in doc["components"])
    assert hashes == lock.count(b"--hash=sha256:") + len(manifest.artifacts)


def test_an_unreadable_lock_is_an_input_error(manifest: Manifest) -> None:
    """A crate whose lock is consistent with its manifest but not a pinned lock (a crafted
    archive): a clear error, never a crash; verification reports it as a disagreement."""
    from modelcrate.errors import InputError

    bad = b"numpy>=2\n"
    with pytest.raises(InputError, match="cannot be read for the SBOM") as info:
        sbom_json(manifest, bad)
    assert info.value.path == "requirements.lock"
    problem = sbom_problem(sbom_json(manifest, LOCK), manifest, bad)
    assert problem is not None
    assert "cannot be read" in problem
    with pytest.raises(InputError, match="cannot be read"):
        sbom_json(manifest, b"\xff\xfe")
