"""``sbom.cdx.json``: a CycloneDX 1.5 SBOM of a crate, derived from its manifest and lock.

What it lists:

- ``metadata.component``: the crate itself (type ``application``, version = the crate digest),
  with its flavor, runtime, Python target, lock sha256 and scan verdict as properties;
- one ``machine-learning-model`` component per model artifact (``file`` for artifacts that are
  not models), with its SHA-256, size and format, a model card naming the task, inputs and
  outputs, and the original source file as its pedigree (the crate converted it);
- one ``library`` component per locked package: name, version, ``pkg:pypi`` purl and every
  SHA-256 the lock accepts for it (pip installs a file only if it has one of them);
- ``dependencies``: crate -> artifacts and direct requirements; package -> packages it needs
  (from the lock's ``# via`` comments).

Deterministic: the serial number is a name-based UUID of the crate digest and the lock's sha256,
the timestamp is the crate's ``created``, lists are sorted and the JSON has sorted keys. The
same crate always gives the same bytes. Nothing here reads the clock, the machine or the
network.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any, Final

from modelcrate.crate.locked import LockedPackage, canonical_name, parse_lock
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import ArtifactEntry, Manifest

__all__ = ["SPEC_VERSION", "crate_sbom", "sbom_json", "sbom_problem"]

SPEC_VERSION: Final = "1.5"
SCHEMA_URL: Final = "http://cyclonedx.org/schema/bom-1.5.schema.json"
# uuid5(NAMESPACE_URL, "https://modelcrate.dev/sbom"): the namespace of crate SBOM serials
_SERIAL_NAMESPACE: Final = uuid.UUID("3322d6cd-688d-5612-bb27-40d06c2d45fd")
_ALGS: Final = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}
# Artifact formats that are models (the rest are listed as plain files).
_MODEL_FORMATS: Final = frozenset({"onnx", "skops", "xgboost-json", "xgboost-ubj", "lightgbm-text"})
_PROP = "modelcrate:"


def crate_sbom(manifest: Manifest, lock: bytes) -> dict[str, Any]:
    """The SBOM document for a crate with this manifest and ``requirements.lock`` bytes.

    Raises InputError when the lock cannot be parsed (it pins every package, with hashes).
    """
    try:
        locked = parse_lock(lock)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InputError(
            f"the crate's requirements.lock cannot be read for the SBOM: {exc}",
            path="requirements.lock",
            hint="rebuild the crate: its lock pins every package as NAME==VERSION with hashes",
        ) from exc
    packages = _merged(locked)
    present = {p.key for p in packages}  # "# via" may name a package no longer in the lock
    lock_sha256 = hashlib.sha256(lock).hexdigest()
    crate_ref = f"crate:{manifest.name}@{manifest.version}"
    artifacts = [_artifact(a, manifest) for a in manifest.artifacts]
    libraries = [_library(p) for p in packages]
    dependencies = [
        {
            "ref": crate_ref,
            "dependsOn": sorted(
                [str(a["bom-ref"]) for a in artifacts]
                + [p.purl for p in packages if p.direct or not present & set(p.required_by)]
            ),
        },
        *(
            {
                "ref": p.purl,
                "dependsOn": sorted(
                    c.purl for c in packages if p.key in c.required_by and c.key != p.key
                ),
            }
            for p in packages
        ),
        *({"ref": str(a["bom-ref"]), "dependsOn": []} for a in artifacts),
    ]
    return {
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(manifest.version, lock_sha256),
        "version": 1,
        "metadata": {
            "timestamp": manifest.created,
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "modelcrate",
                        "version": manifest.provenance.modelcrate_version,
                    }
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": crate_ref,
                "name": manifest.name,
                "version": manifest.version,
                "description": f"modelcrate crate ({manifest.flavor} model, served with "
                f"{manifest.runtime.kind} on Python {manifest.python.version})",
                "properties": _props(
                    {
                        "flavor": manifest.flavor,
                        "runtime": manifest.runtime.kind,
                        "python.version": manifest.python.version,
                        "python.platform": manifest.python.platform,
                        "lock_sha256": lock_sha256,
                        "scan.verdict": manifest.scan.verdict,
                        "parity.passed": str(manifest.parity.passed).lower(),
                    }
                ),
            },
        },
        "components": sorted(artifacts, key=_ref) + sorted(libraries, key=_ref),
        "dependencies": sorted(dependencies, key=_ref_of_dependency),
    }


def sbom_json(manifest: Manifest, lock: bytes) -> bytes:
    """The bytes of ``sbom.cdx.json``: indented JSON with sorted keys and a final newline."""
    doc = crate_sbom(manifest, lock)
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def serial_number(crate_version: str, lock_sha256: str) -> str:
    """``urn:uuid:`` + a name-based (v5) UUID of the crate digest and the lock it installs."""
    return "urn:uuid:" + str(uuid.uuid5(_SERIAL_NAMESPACE, f"{crate_version}+{lock_sha256}"))


def sbom_problem(data: bytes, manifest: Manifest, lock: bytes) -> str | None:
    """What is wrong with an SBOM's content for this crate, or None when it agrees.

    The check compares facts, not bytes (an SBOM written by another modelcrate version may be
    laid out differently): the crate name and digest, each artifact's SHA-256, and the set of
    locked packages with their hashes.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return f"it is not JSON ({exc})"
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        return "it is not a CycloneDX document"
    component = (doc.get("metadata") or {}).get("component") or {}
    if component.get("name") != manifest.name or component.get("version") != manifest.version:
        return "it describes another crate (name or version differ)"
    try:
        expected = crate_sbom(manifest, lock)
    except InputError as exc:
        return exc.message
    found = _facts(doc.get("components"))
    wanted = _facts(expected["components"])
    if found != wanted:
        missing = sorted(set(wanted) - set(found)) or sorted(
            k for k in wanted if found.get(k) != wanted[k]
        )
        extra = sorted(set(found) - set(wanted))
        first = (missing or extra or ["?"])[0]
        return f"its components differ from the crate's artifacts and lock (first: {first})"
    return None


def _facts(components: object) -> dict[str, frozenset[tuple[str, str]]]:
    out: dict[str, frozenset[tuple[str, str]]] = {}
    if not isinstance(components, list):
        return out
    for comp in components:
        if not isinstance(comp, dict):
            continue
        key = str(comp.get("purl") or comp.get("bom-ref") or comp.get("name"))
        hashes = comp.get("hashes")
        if not isinstance(hashes, list):
            hashes = []
        out[key] = frozenset(
            (str(h.get("alg")), str(h.get("content"))) for h in hashes if isinstance(h, dict)
        )
    return out


def _merged(packages: tuple[LockedPackage, ...]) -> list[LockedPackage]:
    """One entry per purl (a lock may list a package twice under different markers)."""
    merged: dict[str, LockedPackage] = {}
    for p in packages:
        seen = merged.get(p.purl)
        if seen is None:
            merged[p.purl] = p
            continue
        merged[p.purl] = LockedPackage(
            name=seen.name,
            version=seen.version,
            hashes=tuple(sorted({*seen.hashes, *p.hashes})),
            extras=tuple(sorted({*seen.extras, *p.extras})),
            required_by=tuple(sorted({*seen.required_by, *p.required_by})),
            direct=seen.direct or p.direct,
        )
    return sorted(merged.values(), key=lambda p: (p.key, p.version))


def _library(p: LockedPackage) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": "library",
        "bom-ref": p.purl,
        "name": canonical_name(p.name),
        "version": p.version,
        "purl": p.purl,
        "scope": "required",
        "hashes": [{"alg": _ALGS[alg], "content": digest} for alg, digest in p.hashes],
    }
    props = {"direct": "true" if p.direct else None, "extras": ",".join(p.extras) or None}
    if any(props.values()):
        comp["properties"] = _props(props)
    return comp


def _artifact(a: ArtifactEntry, manifest: Manifest) -> dict[str, Any]:
    is_model = a.format in _MODEL_FORMATS
    comp: dict[str, Any] = {
        "type": "machine-learning-model" if is_model else "file",
        "bom-ref": f"crate-file:{a.path}",
        "name": a.path,
        "version": manifest.version,
        "hashes": [{"alg": "SHA-256", "content": a.sha256}],
        "properties": _props({"path": a.path, "size": str(a.size), "format": a.format}),
        "pedigree": {
            "ancestors": [
                {
                    "type": "file",
                    "name": manifest.source.path,
                    "hashes": [{"alg": "SHA-256", "content": manifest.source.sha256}],
                    "properties": _props(
                        {"size": str(manifest.source.size), "format": manifest.source.format}
                    ),
                }
            ],
            "notes": f"converted from the source file by modelcrate ({manifest.flavor} flavor)",
        },
    }
    if is_model:
        comp["modelCard"] = {"modelParameters": _model_parameters(manifest)}
    return comp


def _model_parameters(manifest: Manifest) -> dict[str, Any]:
    sig = manifest.signature
    params: dict[str, Any] = {}
    if sig.get("task"):
        params["task"] = str(sig["task"])
    inputs = [_io_format(c) for c in sig.get("inputs") or [] if isinstance(c, dict)]
    outputs = [_io_format(c) for c in sig.get("outputs") or [] if isinstance(c, dict)]
    if inputs:
        params["inputs"] = [{"format": f} for f in inputs]
    if outputs:
        params["outputs"] = [{"format": f} for f in outputs]
    return params


def _io_format(column: dict[str, Any]) -> str:
    shape = column.get("shape")
    dims = f"[{','.join(str(d) for d in shape)}]" if shape else ""
    return f"{column.get('name')}: {column.get('dtype')}{dims}"


def _props(values: dict[str, str | None]) -> list[dict[str, str]]:
    return [{"name": _PROP + k, "value": v} for k, v in sorted(values.items()) if v is not None]


def _ref(comp: dict[str, Any]) -> str:
    return str(comp["bom-ref"])


def _ref_of_dependency(dep: dict[str, Any]) -> str:
    return str(dep["ref"])
