"""``crate.yaml`` read without Pydantic, for a server's start-up.

A server reads one manifest once; building the Pydantic models to do it costs more start-up
time than loading the model itself. :func:`read_manifest_view` reads the YAML (libyaml) and
accepts it only when it is exactly what ``modelcrate build`` writes: every field the server
and the integrity check read present with its JSON type, a valid name, and a version equal to
the digest of the content as written. Anything else returns None, and the caller parses the
file with the full model (``manifest.load_manifest``), which explains what is wrong.

A :class:`ManifestView` is the parsed mapping with attribute access (``view.runtime.kind``,
``view.artifacts[0].sha256``): the model's field names and JSON values, so the integrity check
(``layout.verify_crate``) and the SBOM comparison read it like the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from modelcrate.crate.canonical import MANIFEST_NAME, NAME_RE, NOT_IN_DIGEST, canonical_json


class _Node(dict[str, Any]):
    """A JSON object with attribute access to its fields (nested objects too)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self[name])
        except KeyError:
            raise AttributeError(name) from None


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Node(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class ManifestView(_Node):
    """A verified ``crate.yaml`` as written by ``modelcrate build``, read without Pydantic."""

    def compute_version(self) -> str:
        content = {k: v for k, v in self.items() if k not in NOT_IN_DIGEST}
        return "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()

    def signature_obj(self) -> Any:
        from modelcrate.crate.signature import Signature

        return Signature.from_dict(self["signature"])

    @property
    def short_version(self) -> str:
        return str(self["version"]).removeprefix("sha256:")[:12]


# field -> JSON type(s), for the fields the server and the integrity check read
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "version": str,
    "created": str,
    "flavor": str,
    "runtime": dict,
    "artifacts": list,
    "signature": dict,
    "lock_sha256": str,
    "scan": dict,
    "batching": dict,
}


def read_manifest_view(crate_dir: Path) -> ManifestView | None:
    """The crate's manifest when it is exactly as built and its version digest holds; else
    None (then parse it with ``load_manifest`` for the reason)."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    try:
        data = (Path(crate_dir) / MANIFEST_NAME).read_bytes()
        raw = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(raw, dict) or not _well_formed(raw):
        return None
    view = ManifestView(raw)
    try:
        if view.compute_version() != raw["version"]:
            return None
    except (TypeError, ValueError):  # not JSON-representable: not as built
        return None
    return view


def _well_formed(raw: dict[str, Any]) -> bool:
    if any(not isinstance(raw.get(k), t) for k, t in _FIELDS.items()):
        return False
    if not NAME_RE.match(raw["name"]) or not isinstance(raw["runtime"].get("kind"), str):
        return False
    batching = raw["batching"]
    if not isinstance(batching.get("max_batch_size"), int) or not isinstance(
        batching.get("max_latency_ms"), int | float
    ):
        return False
    scan = raw["scan"]
    if not isinstance(scan.get("verdict"), str) or not isinstance(scan.get("counts"), dict):
        return False
    return all(
        isinstance(a, dict)
        and isinstance(a.get("path"), str)
        and isinstance(a.get("sha256"), str)
        and isinstance(a.get("size"), int)
        for a in raw["artifacts"]
    )
