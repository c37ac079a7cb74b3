"""OCI objects: canonical JSON, golden config/manifest bytes, image-spec field names, parsers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcrate.errors import InputError
from modelcrate.image.oci import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    HealthCheck,
    HistoryEntry,
    ImageConfig,
    Platform,
    assemble_image,
    build_image,
    build_index,
    canonical_json,
    check_platform,
    parse_index,
    parse_manifest,
    rfc3339,
    select_platform,
)
from modelcrate.image.tarlayer import DOCKER_LAYER_GZIP, LayerFile, build_layer

# Field names of the OCI image-spec v1.1 (config.md, manifest.md, image-index.md,
# descriptor.md), plus Docker's Healthcheck extension that the spec lets configs carry.
SPEC_MANIFEST = {"schemaVersion", "mediaType", "artifactType", "config", "layers", "subject"}
SPEC_MANIFEST |= {"annotations"}
SPEC_INDEX = {"schemaVersion", "mediaType", "artifactType", "manifests", "subject", "annotations"}
SPEC_DESCRIPTOR = {"mediaType", "digest", "size", "urls", "annotations", "data", "artifactType"}
SPEC_DESCRIPTOR |= {"platform"}
SPEC_PLATFORM = {"architecture", "os", "os.version", "os.features", "variant", "features"}
SPEC_CONFIG = {"created", "author", "architecture", "os", "os.version", "os.features", "variant"}
SPEC_CONFIG |= {"config", "rootfs", "history"}
SPEC_RUN = {"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir"}
SPEC_RUN |= {"Labels", "StopSignal", "ArgsEscaped", "Healthcheck"}
SPEC_HISTORY = {"created", "author", "created_by", "comment", "empty_layer"}
SPEC_HEALTH = {"Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"}

CONFIG = ImageConfig(
    user="10001:10001",
    entrypoint=("/usr/bin/python3", "-m", "modelcrate", "serve", "/opt/modelcrate/crate"),
    env=("PATH=/usr/bin", "PYTHONUNBUFFERED=1"),
    exposed_ports=("8080/tcp",),
    labels={"org.opencontainers.image.title": "iris", "io.modelcrate.crate.name": "iris"},
    working_dir="/opt/modelcrate",
    healthcheck=HealthCheck(("CMD", "/usr/bin/python3", "-c", "pass")),
    created=rfc3339(0),
    history=(HistoryEntry("modelcrate: app layer", rfc3339(0)),),
)
LAYER = build_layer([LayerFile("/opt/modelcrate/crate/crate.yaml", b"name: iris\n")])
GOLDEN_CONFIG_DIGEST = "sha256:fc899e53c40fe86f120d7c31a15ddf33a52440e46f87937b3fc3183f60dc72f2"
GOLDEN_IMAGE_DIGEST = "sha256:143b71e91bdb4489ccdea6bbd03411ef30fbcc5c65dc09ef7fc7c7745708b0b8"


def _check_descriptor(d: dict[str, Any]) -> None:
    assert set(d) <= SPEC_DESCRIPTOR
    assert {"mediaType", "digest", "size"} <= set(d)
    assert isinstance(d["size"], int)
    if "platform" in d:
        assert set(d["platform"]) <= SPEC_PLATFORM
        assert {"architecture", "os"} <= set(d["platform"])


def check_manifest(doc: dict[str, Any]) -> None:
    """The manifest and its descriptors use only image-spec field names, with the required ones."""
    assert set(doc) <= SPEC_MANIFEST
    assert {"schemaVersion", "mediaType", "config", "layers"} <= set(doc)
    assert doc["schemaVersion"] == 2
    for d in [doc["config"], *doc["layers"]]:
        _check_descriptor(d)


def check_config(doc: dict[str, Any]) -> None:
    assert set(doc) <= SPEC_CONFIG
    assert {"architecture", "os", "rootfs"} <= set(doc)
    assert set(doc["config"]) <= SPEC_RUN
    assert set(doc["config"].get("Healthcheck", {})) <= SPEC_HEALTH
    assert doc["rootfs"]["type"] == "layers"
    assert all(set(h) <= SPEC_HISTORY for h in doc.get("history", []))


def check_index(doc: dict[str, Any]) -> None:
    assert set(doc) <= SPEC_INDEX
    assert doc["schemaVersion"] == 2
    for d in doc["manifests"]:
        _check_descriptor(d)


def test_canonical_json() -> None:
    assert canonical_json({"b": [1, {"d": 1, "c": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"c":"é","d":1}]}'.encode()
    )


def test_golden_image() -> None:
    image = build_image(CONFIG, [LAYER])
    assert image.config_digest == GOLDEN_CONFIG_DIGEST
    assert image.digest == GOLDEN_IMAGE_DIGEST
    assert image.config_blob == canonical_json(json.loads(image.config_blob))
    assert image.manifest_blob == canonical_json(json.loads(image.manifest_blob))
    assert build_image(CONFIG, [LAYER]) == image


def test_documents_follow_the_image_spec() -> None:
    image = build_image(CONFIG, [LAYER], annotations={"org.opencontainers.image.title": "iris"})
    manifest, config = json.loads(image.manifest_blob), json.loads(image.config_blob)
    check_manifest(manifest)
    check_config(config)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG,
        "digest": image.config_digest,
        "size": len(image.config_blob),
    }
    assert manifest["layers"] == [
        {"mediaType": LAYER.media_type, "digest": LAYER.digest, "size": LAYER.size}
    ]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [LAYER.diff_id]}
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Healthcheck"]["Interval"] == 30_000_000_000
    assert config["created"] == "1970-01-01T00:00:00Z"
    index = json.loads(build_index([image.descriptor({"org.opencontainers.image.ref.name": "1"})]))
    check_index(index)
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}


def test_docker_media_types_same_blobs() -> None:
    oci = build_image(CONFIG, [LAYER])
    docker = build_image(CONFIG, [LAYER], docker=True)
    assert docker.config_blob == oci.config_blob
    manifest = json.loads(docker.manifest_blob)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert manifest["layers"][0]["mediaType"] == DOCKER_LAYER_GZIP
    assert parse_manifest(docker.manifest_blob).media_type == DOCKER_MANIFEST


def test_history_must_match_layers() -> None:
    with pytest.raises(ValueError, match="history lists 1 layers"):
        build_image(CONFIG, [LAYER, LAYER])
    two = ImageConfig(history=(HistoryEntry("a"), HistoryEntry("env", empty_layer=True)))
    assert json.loads(build_image(two, [LAYER]).config_blob)["history"][1]["empty_layer"] is True


def test_parse_round_trip() -> None:
    image = build_image(CONFIG, [LAYER])
    manifest = parse_manifest(image.manifest_blob)
    assert manifest.config.digest == image.config_digest
    assert manifest.layers == (Descriptor(LAYER.media_type, LAYER.digest, LAYER.size),)
    assert image.manifest == manifest


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"schemaVersion":1}', "schemaVersion"),
        (b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'"}', "not an image manifest"),
        (b'{"schemaVersion":2,"config":{},"layers":[]}', "bad mediaType"),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:../x","size":1},'
            b'"layers":[]}',
            "bad or unsupported digest",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:x","size":1}}',
            "layers",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:'
            + b"a" * 64
            + b'","size":-1},"layers":[]}',
            "bad size",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"md5:ab","size":1},'
            b'"layers":[]}',
            "digest",
        ),
    ],
)
def test_malformed_manifests_are_refused(doc: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_manifest(doc)


def _index(*platforms: Platform) -> bytes:
    return build_index(
        [
            Descriptor(OCI_MANIFEST, "sha256:" + f"{i:064x}", 100, None, p)
            for i, p in enumerate(platforms)
        ]
    )


def test_select_platform() -> None:
    index = parse_index(
        _index(
            Platform("linux", "arm64", "v8"),
            Platform("linux", "amd64"),
            Platform("windows", "amd64"),
        )
    )
    assert select_platform(index, Platform.parse("linux/amd64"), "x").digest.endswith("1")
    assert select_platform(index, Platform.parse("linux/arm64"), "x").digest.endswith("0")
    assert select_platform(index, Platform.parse("linux/arm64/v8"), "x").digest.endswith("0")
    with pytest.raises(InputError, match="offers linux/amd64, linux/arm64/v8, windows/amd64"):
        select_platform(index, Platform.parse("linux/s390x"), "x")


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_bad_platform(text: str) -> None:
    with pytest.raises(InputError, match="OS/ARCH"):
        Platform.parse(text)


def test_assemble_checks_every_blob() -> None:
    image = build_image(CONFIG, [LAYER])
    good = {LAYER.digest: LAYER.blob}
    assert assemble_image(image.manifest_blob, image.config_blob, good, "x") == image
    with pytest.raises(InputError, match="missing or does not match"):
        assemble_image(image.manifest_blob, image.config_blob, {LAYER.digest: b"evil"}, "x")
    with pytest.raises(InputError, match="config blob does not match"):
        assemble_image(image.manifest_blob, image.config_blob + b" ", good, "x")


def test_check_platform() -> None:
    arm = build_image(ImageConfig(architecture="arm64"), [LAYER])
    check_platform(arm, Platform.parse("linux/arm64"), "x")
    check_platform(arm, None, "x")
    with pytest.raises(InputError, match="is an image for linux/arm64, not linux/amd64"):
        check_platform(arm, Platform.parse("linux/amd64"), "x")


def test_image_package_is_lazy_and_its_names_resolve() -> None:
    import subprocess
    import sys

    import modelcrate.image as image_pkg

    assert image_pkg.__all__ == sorted(image_pkg.__all__)
    for name in image_pkg.__all__:
        assert getattr(image_pkg, name) is not None
    code = "import sys, modelcrate.image; print(sorted(m for m in sys.modules if 'image.' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
