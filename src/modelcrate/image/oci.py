"""OCI images: the image config, building an image, and the :class:`Image` type.

Everything written is canonical JSON (sorted keys, compact separators, UTF-8), so the same inputs
always give the same config digest and manifest (image) digest. Media types, descriptors,
manifests and indexes live in :mod:`modelcrate.image.manifest` and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelcrate.errors import InputError
from modelcrate.image.manifest import (
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    SHA256_RE,
    Descriptor,
    Index,
    Manifest,
    Platform,
    canonical_json,
    json_object,
    loads,
    malformed,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from modelcrate.image.tarlayer import DOCKER_LAYER_GZIP, MEDIA_TYPE_LAYER_GZIP, Layer, sha256_digest

__all__ = [
    "ANNOTATION_REF_NAME",
    "DOCKER_CONFIG",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "SHA256_RE",
    "Descriptor",
    "HealthCheck",
    "HistoryEntry",
    "Image",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "assemble_image",
    "build_image",
    "build_index",
    "canonical_json",
    "check_platform",
    "media_type_of",
    "parse_index",
    "parse_manifest",
    "rfc3339",
    "select_platform",
]

_TO_DOCKER = {MEDIA_TYPE_LAYER_GZIP: DOCKER_LAYER_GZIP}


def rfc3339(epoch: int) -> str:
    """``1970-01-01T00:00:00Z`` form of a Unix time, for ``created`` fields."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class HealthCheck:
    """Docker's ``Healthcheck`` config extension (durations in seconds here, ns in JSON)."""

    test: tuple[str, ...]
    interval_s: float = 30.0
    timeout_s: float = 5.0
    start_period_s: float = 10.0
    retries: int = 3

    def to_json(self) -> dict[str, Any]:
        ns = 1_000_000_000
        return {
            "Test": list(self.test),
            "Interval": int(self.interval_s * ns),
            "Timeout": int(self.timeout_s * ns),
            "StartPeriod": int(self.start_period_s * ns),
            "Retries": self.retries,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One ``history`` record; ``empty_layer`` entries have no layer of their own."""

    created_by: str
    created: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created_by": self.created_by}
        if self.created:
            out["created"] = self.created
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True)
class ImageConfig:
    """What the image config says besides its layers (``rootfs`` is filled from the layers)."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    user: str | None = None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    stop_signal: str | None = None
    healthcheck: HealthCheck | None = None
    created: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    def to_json(self, diff_ids: Sequence[str]) -> dict[str, Any]:
        run: dict[str, Any] = {}
        if self.user:
            run["User"] = self.user
        if self.entrypoint:
            run["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            run["Cmd"] = list(self.cmd)
        if self.env:
            run["Env"] = list(self.env)
        if self.exposed_ports:
            run["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.labels:
            run["Labels"] = dict(self.labels)
        if self.working_dir:
            run["WorkingDir"] = self.working_dir
        if self.stop_signal:
            run["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            run["Healthcheck"] = self.healthcheck.to_json()
        out: dict[str, Any] = {
            "architecture": self.architecture,
            "os": self.os,
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }
        if self.variant:
            out["variant"] = self.variant
        if self.created:
            out["created"] = self.created
        if self.history:
            out["history"] = [h.to_json() for h in self.history]
        return out


@dataclass(frozen=True)
class Image:
    """A complete image: manifest and config bytes and every layer blob, in manifest order.

    Built images and pulled or read images are the same type, so each can be written out,
    pushed or inspected the same way.
    """

    manifest_blob: bytes
    config_blob: bytes
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        """The image (manifest) digest: what ``repo@sha256:..`` names."""
        return sha256_digest(self.manifest_blob)

    @property
    def config_digest(self) -> str:
        """The config digest; podman and docker show its hex as the image ID."""
        return sha256_digest(self.config_blob)

    @property
    def manifest(self) -> Manifest:
        return parse_manifest(self.manifest_blob)

    @property
    def config(self) -> dict[str, Any]:
        return json_object(loads(self.config_blob, "image config"), "image config")

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        """The descriptor an index uses to point at this image."""
        config = self.config
        variant = config.get("variant")
        platform = Platform(
            str(config.get("os", "")),
            str(config.get("architecture", "")),
            variant if isinstance(variant, str) else None,
        )
        return Descriptor(
            self.media_type, self.digest, len(self.manifest_blob), annotations, platform
        )

    def blobs(self) -> dict[str, bytes]:
        """Config and layer blobs by digest."""
        out = {self.config_digest: self.config_blob}
        out.update((layer.digest, layer.blob) for layer in self.layers)
        return out


def build_image(
    config: ImageConfig,
    layers: Sequence[Layer],
    *,
    annotations: Mapping[str, str] | None = None,
    docker: bool = False,
) -> Image:
    """An image of ``layers`` (base first) with ``config``; ``docker`` uses schema 2 media types.

    The Docker media types matter only to tools that ignore extensions in OCI images (podman,
    for one, keeps ``Healthcheck`` only from Docker-format configs); the blobs are the same.
    """
    built = sum(1 for h in config.history if not h.empty_layer)
    if config.history and built != len(layers):
        raise ValueError(f"history lists {built} layers, the image has {len(layers)}")
    config_blob = canonical_json(config.to_json([layer.diff_id for layer in layers]))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": Descriptor(
            DOCKER_CONFIG if docker else OCI_CONFIG, sha256_digest(config_blob), len(config_blob)
        ).to_json(),
        "layers": [
            Descriptor(
                _TO_DOCKER.get(layer.media_type, layer.media_type) if docker else layer.media_type,
                layer.digest,
                layer.size,
            ).to_json()
            for layer in layers
        ],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Image(canonical_json(manifest), config_blob, tuple(layers))


def build_index(manifests: Sequence[Descriptor]) -> bytes:
    """An OCI image index of ``manifests`` (canonical JSON)."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [m.to_json() for m in manifests],
        }
    )


def assemble_image(
    manifest_blob: bytes, config_blob: bytes, blobs: Mapping[str, bytes], where: str
) -> Image:
    """An :class:`Image` from fetched parts; checks every digest, size and the diff_id count."""
    manifest = parse_manifest(manifest_blob, f"{where} manifest")
    if sha256_digest(config_blob) != manifest.config.digest:
        raise malformed(where, "the config blob does not match its digest")
    config = json_object(loads(config_blob, f"{where} config"), f"{where} config")
    rootfs = json_object(config.get("rootfs"), f"{where} config.rootfs")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise malformed(where, "config rootfs.diff_ids does not match the manifest's layers")
    layers = []
    for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
        blob = blobs.get(desc.digest)
        if blob is None or sha256_digest(blob) != desc.digest or len(blob) != desc.size:
            raise malformed(where, f"layer {desc.digest} is missing or does not match its digest")
        if not isinstance(diff_id, str) or not SHA256_RE.match(diff_id):
            raise malformed(where, f"bad diff_id {diff_id!r}")
        layers.append(Layer(blob, desc.digest, diff_id, desc.size, desc.media_type))
    return Image(manifest_blob, config_blob, tuple(layers))


def check_platform(image: Image, want: Platform | None, where: str) -> None:
    """Refuse an image whose config is for another OS/architecture than ``want``."""
    if want is None:
        return
    config = image.config
    variant = config.get("variant")
    have = Platform(
        str(config.get("os")),
        str(config.get("architecture")),
        variant if isinstance(variant, str) else None,
    )
    if not have.matches(want):
        raise InputError(
            f"{where} is an image for {have}, not {want}",
            hint=f"use a base image built for {want}, or pass --platform {have}",
        )
