"""OCI layouts and archives: atomic writes, deterministic archives, readers, real tools.

The last tests hand the outputs to the tools a user has: ``skopeo inspect``, ``umoci unpack``,
``podman load``/``podman save`` (their outputs read back by modelcrate).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.image.layout import (
    read_oci_archive,
    read_oci_layout,
    write_oci_archive,
    write_oci_layout,
)
from modelcrate.image.oci import (
    OCI_INDEX,
    Descriptor,
    Image,
    ImageConfig,
    Platform,
    build_image,
    build_index,
    canonical_json,
)
from modelcrate.image.tarlayer import LayerFile, build_layer, sha256_digest
from tests.image.e2e_env import Podman, run, unique

HELLO = b"hello from modelcrate\n"


def tiny_image(text: bytes = HELLO, *, arch: str = "amd64") -> Image:
    """One layer with one static file, a config that names it."""
    layer = build_layer(
        [
            LayerFile("/srv/hello.txt", text),
            LayerFile("/srv/bin/hello", b"#!/bin/sh\ncat /srv/hello.txt\n", 0o755),
        ]
    )
    config = ImageConfig(architecture=arch, entrypoint=("/srv/bin/hello",), labels={"t": "1"})
    return build_image(config, [layer])


def test_layout_write_and_read(tmp_path: Path) -> None:
    image = tiny_image()
    out = write_oci_layout(image, tmp_path / "layout", "iris:1")
    assert json.loads((out / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_bytes())
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"] == [
        {
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": len(image.manifest_blob),
            "annotations": {"org.opencontainers.image.ref.name": "iris:1"},
            "platform": {"architecture": "amd64", "os": "linux"},
        }
    ]
    for digest in (image.digest, image.config_digest, image.layers[0].digest):
        blob = (out / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert sha256_digest(blob) == digest
    assert read_oci_layout(out, "iris:1") == image
    assert read_oci_layout(out) == image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]  # no temp folder left


def test_layout_tags_are_added_and_replaced(tmp_path: Path) -> None:
    one, two = tiny_image(b"one"), tiny_image(b"two")
    write_oci_layout(one, tmp_path / "l", "a")
    write_oci_layout(two, tmp_path / "l", "b")
    assert read_oci_layout(tmp_path / "l", "a") == one
    assert read_oci_layout(tmp_path / "l", "b") == two
    with pytest.raises(InputError, match="several images"):
        read_oci_layout(tmp_path / "l")
    write_oci_layout(two, tmp_path / "l", "a")
    assert read_oci_layout(tmp_path / "l") == two  # both tags name the same image now
    assert read_oci_layout(tmp_path / "l", "a") == two
    refs = [
        m["annotations"] for m in json.loads((tmp_path / "l/index.json").read_bytes())["manifests"]
    ]
    assert refs == [
        {"org.opencontainers.image.ref.name": "b"},
        {"org.opencontainers.image.ref.name": "a"},
    ]
    with pytest.raises(InputError, match="no image tagged 'c' in the layout; it holds a, b"):
        read_oci_layout(tmp_path / "l", "c")


def test_layout_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an OCI layout"):
        write_oci_layout(tiny_image(), tmp_path / "stuff", "t")
    assert sorted(p.name for p in (tmp_path / "stuff").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    write_oci_layout(tiny_image(), tmp_path / "empty", "t")
    assert read_oci_layout(tmp_path / "empty", "t") == tiny_image()


def test_malformed_layout_is_not_extended(tmp_path: Path) -> None:
    out = write_oci_layout(tiny_image(), tmp_path / "l", "a")
    (out / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": "oops"}')
    with pytest.raises(InputError, match="manifests must be a list"):
        write_oci_layout(tiny_image(b"two"), out, "b")
    with pytest.raises(InputError, match="bad image tag"):
        write_oci_layout(tiny_image(), tmp_path / "other", "has space")


def test_corrupt_or_incomplete_layout_is_refused(tmp_path: Path) -> None:
    image = tiny_image()
    out = write_oci_layout(image, tmp_path / "l", "t")
    blob = out / "blobs" / "sha256" / image.layers[0].digest.removeprefix("sha256:")
    blob.write_bytes(b"tampered")
    with pytest.raises(InputError, match="does not match its digest"):
        read_oci_layout(out, "t")
    blob.unlink()
    with pytest.raises(InputError, match="incomplete"):
        read_oci_layout(out, "t")
    with pytest.raises(InputError, match=r"no index\.json"):
        read_oci_layout(tmp_path, "t")


def test_layout_with_a_multi_platform_index(tmp_path: Path) -> None:
    amd, arm = tiny_image(b"amd"), tiny_image(b"arm", arch="arm64")
    out = tmp_path / "multi"
    write_oci_layout(amd, out, "amd")
    write_oci_layout(arm, out, "arm")
    with pytest.raises(InputError, match="is an image for linux/arm64, not linux/amd64"):
        read_oci_layout(out, "arm")
    index = build_index([amd.descriptor(), arm.descriptor()])
    (out / "blobs/sha256" / sha256_digest(index).removeprefix("sha256:")).write_bytes(index)
    top = Descriptor(
        OCI_INDEX, sha256_digest(index), len(index), {"org.opencontainers.image.ref.name": "multi"}
    )
    (out / "index.json").write_bytes(build_index([top]))
    assert read_oci_layout(out, "multi") == amd
    assert read_oci_layout(out, "multi", platform="linux/arm64") == arm
    assert read_oci_layout(out, "multi", platform=Platform("linux", "arm64")) == arm
    with pytest.raises(InputError, match="no image for platform linux/s390x"):
        read_oci_layout(out, "multi", platform="linux/s390x")


def test_archive_is_deterministic(tmp_path: Path) -> None:
    image = tiny_image()
    a = write_oci_archive(image, tmp_path / "a.tar", "iris:1")
    b = write_oci_archive(tiny_image(), tmp_path / "b.tar", "iris:1")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[:2] == ["blobs", "blobs/sha256"]
        assert names[2:] == sorted(names[2:])
        assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
        assert all((m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0) for m in members)
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    hexes = [image.config_digest, image.layers[0].digest]
    assert docker == [
        {
            "Config": "blobs/sha256/" + hexes[0].removeprefix("sha256:"),
            "RepoTags": ["iris:1"],
            "Layers": ["blobs/sha256/" + hexes[1].removeprefix("sha256:")],
        }
    ]
    assert read_oci_archive(a, "iris:1") == image
    assert read_oci_archive(a) == image


def test_archive_with_a_bare_tag_has_no_docker_repo_tag(tmp_path: Path) -> None:
    out = write_oci_archive(tiny_image(), tmp_path / "a.tar", "1")
    with tarfile.open(out) as tar:
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert docker[0]["RepoTags"] == []
    assert read_oci_archive(out, "1") == tiny_image()


def test_failed_archive_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(InputError, match="No space left on device"):
        write_oci_archive(tiny_image(), tmp_path / "img.tar", "t")
    with pytest.raises(InputError, match="No space left on device"):
        write_oci_layout(tiny_image(), tmp_path / "layout", "t")
    assert list(tmp_path.iterdir()) == []


def test_archive_readers_refuse_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(InputError, match="cannot read the image archive"):
        read_oci_archive(junk)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        tar.addfile(tarfile.TarInfo("readme"), io.BytesIO(b""))
    with pytest.raises(InputError, match=r"neither index\.json nor manifest\.json"):
        read_oci_archive(empty)


def test_docker_archive_is_read(tmp_path: Path) -> None:
    """An archive in the classic ``docker save`` shape: manifest.json, plain tar layers."""
    image = tiny_image()
    raw_layer = _gunzip(image.layers[0].blob)
    docker = [{"Config": "cfg.json", "RepoTags": ["localhost/hello:1"], "Layers": ["l1/layer.tar"]}]
    out = tmp_path / "docker.tar"
    with tarfile.open(out, "w") as tar:
        for name, data in (
            ("manifest.json", canonical_json(docker)),
            ("cfg.json", image.config_blob),
            ("l1/layer.tar", raw_layer),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    read = read_oci_archive(out, "hello:1")
    assert read.config_blob == image.config_blob
    assert [layer.diff_id for layer in read.layers] == [image.layers[0].diff_id]
    assert read.layers[0].blob == raw_layer
    with pytest.raises(InputError, match="expected one image tagged 'other:1'"):
        read_oci_archive(out, "other:1")


def _gunzip(blob: bytes) -> bytes:
    import gzip

    return gzip.decompress(blob)


# ------------------------------------------------------------------------ with the real tools


def test_skopeo_and_umoci_read_the_layout(container_tools: None, tmp_path: Path) -> None:
    image = tiny_image()
    layout = write_oci_layout(image, tmp_path / "layout", "hello:1")
    archive = write_oci_archive(image, tmp_path / "hello.tar", "hello:1")
    for ref in (
        f"oci:{layout}:hello:1",
        f"oci-archive:{archive}:hello:1",
        f"oci-archive:{archive}",
    ):
        info = json.loads(run(["skopeo", "inspect", ref], timeout=60).stdout)
        assert info["Digest"] == image.digest
        assert info["Layers"] == [image.layers[0].digest]
    config = json.loads(run(["skopeo", "inspect", "--config", f"oci:{layout}:hello:1"]).stdout)
    assert config["config"]["Entrypoint"] == ["/srv/bin/hello"]
    bundle = tmp_path / "bundle"
    run(["umoci", "unpack", "--rootless", "--image", f"{layout}:hello:1", str(bundle)], timeout=60)
    assert (bundle / "rootfs/srv/hello.txt").read_bytes() == HELLO
    assert os.access(bundle / "rootfs/srv/bin/hello", os.X_OK)


def test_skopeo_copy_of_our_layout_reads_back(container_tools: None, tmp_path: Path) -> None:
    image = tiny_image()
    archive = write_oci_archive(image, tmp_path / "hello.tar", "hello:1")
    run(["skopeo", "copy", f"oci-archive:{archive}:hello:1", f"oci:{tmp_path / 'copy'}:again"])
    assert read_oci_layout(tmp_path / "copy", "again") == image


def test_podman_load_and_save(podman: Podman, tmp_path: Path) -> None:
    image = tiny_image()
    name = f"localhost/{unique('mc-layout-test')}:1"
    archive = write_oci_archive(image, tmp_path / "hello.tar", name)
    podman.images.append(name)
    loaded = podman("load", "-i", str(archive), timeout=120).stdout
    assert name in loaded
    info = json.loads(podman("image", "inspect", name).stdout)[0]
    assert info["Id"] == image.config_digest.removeprefix("sha256:")
    assert info["Digest"] == image.digest
    assert info["Config"]["Entrypoint"] == ["/srv/bin/hello"]
    # What podman writes back, in both of its formats, reads with modelcrate.
    for fmt in ("docker-archive", "oci-archive"):
        saved = tmp_path / f"saved-{fmt}.tar"
        podman("save", "--format", fmt, "-o", str(saved), name, timeout=120)
        back = read_oci_archive(saved)
        assert back.config_digest == image.config_digest
        assert [layer.diff_id for layer in back.layers] == [image.layers[0].diff_id]
