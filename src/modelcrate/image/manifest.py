"""Descriptors, manifests and indexes: media types, canonical JSON, strict parsers.

Parsers accept the OCI image-spec shapes and their Docker schema 2 twins (what registries serve
for ``python:3.11-slim``), check field names and types (``schemaVersion`` 2, descriptors with a
media type, a ``sha256:`` digest and a size) and refuse anything malformed with an
:class:`InputError` that names the object. Everything written is canonical JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelcrate.errors import InputError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, e.g. ``linux/amd64`` or ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InputError(
                f"platform {text!r} is not OS/ARCH[/VARIANT]", hint="for example linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, value: str | Platform) -> Platform:
        """``value`` itself, or parsed from ``os/arch[/variant]``."""
        return value if isinstance(value, Platform) else cls.parse(value)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: Platform) -> bool:
        """Same OS and architecture; a variant only counts when both name one."""
        same = self.os == other.os and self.architecture == other.architecture
        return same and (not self.variant or not other.variant or self.variant == other.variant)

    def to_json(self) -> dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        d = json_object(obj, where)
        media_type, digest, size = d.get("mediaType"), d.get("digest"), d.get("size")
        if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.match(media_type):
            raise malformed(where, f"bad mediaType {media_type!r}")
        if not isinstance(digest, str) or not SHA256_RE.match(digest):
            raise malformed(where, f"bad or unsupported digest {digest!r} (sha256 expected)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise malformed(where, f"bad size {size!r}")
        annotations = _str_map(d.get("annotations"), f"{where}.annotations")
        platform = None
        if (p := d.get("platform")) is not None:
            pd = json_object(p, f"{where}.platform")
            os_, arch, variant = pd.get("os"), pd.get("architecture"), pd.get("variant")
            if not isinstance(os_, str) or not isinstance(arch, str):
                raise malformed(where, "platform needs string os and architecture")
            platform = Platform(os_, arch, variant if isinstance(variant, str) else None)
        return cls(media_type, digest, size, annotations or None, platform)


@dataclass(frozen=True)
class Manifest:
    """A parsed image manifest (OCI or Docker schema 2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Index:
    """A parsed image index / Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] | None = None


def parse_manifest(blob: bytes, where: str = "manifest") -> Manifest:
    """An image manifest; refuses indexes (use :func:`parse_index`) and malformed JSON."""
    obj = json_object(loads(blob, where), where)
    if obj.get("schemaVersion") != 2:
        raise malformed(where, f"schemaVersion {obj.get('schemaVersion')!r} (2 expected)")
    media_type = obj.get("mediaType", OCI_MANIFEST)
    if media_type not in MANIFEST_TYPES:
        raise malformed(where, f"mediaType {media_type!r} is not an image manifest")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise malformed(where, "layers must be a list")
    return Manifest(
        str(media_type),
        Descriptor.from_json(obj.get("config"), f"{where}.config"),
        tuple(Descriptor.from_json(d, f"{where}.layers[{i}]") for i, d in enumerate(layers)),
        _str_map(obj.get("annotations"), f"{where}.annotations") or None,
    )


def parse_index(blob: bytes, where: str = "index") -> Index:
    """An image index or Docker manifest list."""
    obj = json_object(loads(blob, where), where)
    if obj.get("schemaVersion") != 2:
        raise malformed(where, f"schemaVersion {obj.get('schemaVersion')!r} (2 expected)")
    media_type = obj.get("mediaType", OCI_INDEX)
    if media_type not in INDEX_TYPES:
        raise malformed(where, f"mediaType {media_type!r} is not an image index")
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise malformed(where, "manifests must be a list")
    return Index(
        str(media_type),
        tuple(Descriptor.from_json(d, f"{where}.manifests[{i}]") for i, d in enumerate(manifests)),
        _str_map(obj.get("annotations"), f"{where}.annotations") or None,
    )


def media_type_of(blob: bytes, where: str) -> str:
    """The ``mediaType`` a manifest or index declares (OCI manifests may omit it)."""
    obj = json_object(loads(blob, where), where)
    declared = obj.get("mediaType")
    if isinstance(declared, str):
        return declared
    return OCI_INDEX if "manifests" in obj else OCI_MANIFEST


def select_platform(index: Index, platform: Platform, where: str) -> Descriptor:
    """The index entry for ``platform``; a clear error listing what the index offers."""
    for entry in index.manifests:
        if entry.platform is not None and entry.platform.matches(platform):
            return entry
    offered = sorted({str(m.platform) for m in index.manifests if m.platform is not None})
    raise InputError(
        f"{where} has no image for platform {platform}; it offers {', '.join(offered) or 'none'}",
        hint="pick one of the offered platforms with --platform, or use a base image built for "
        f"{platform}",
    )


def loads(blob: bytes, where: str) -> object:
    """Parsed JSON, or an :class:`InputError` naming ``where``."""
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(where, f"not JSON ({exc})") from exc


def json_object(obj: object, where: str) -> dict[str, Any]:
    """``obj`` when it is a JSON object, else an :class:`InputError` naming ``where``."""
    if not isinstance(obj, dict):
        raise malformed(where, "a JSON object was expected")
    return obj


def _str_map(obj: object, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    d = json_object(obj, where)
    if not all(isinstance(v, str) for v in d.values()):
        raise malformed(where, "values must be strings")
    return d


def malformed(where: str, problem: str) -> InputError:
    """The error for a malformed image document."""
    return InputError(
        f"malformed {where}: {problem}",
        hint="the image is corrupt or not an OCI/Docker v2 image; rebuild or re-export it",
    )
