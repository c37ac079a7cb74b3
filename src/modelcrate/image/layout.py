"""OCI image layouts and archives: write them atomically, read them (and docker-archives) back.

A layout is the folder of the OCI image-spec (``oci-layout``, ``index.json``, ``blobs/sha256``).
An archive is that folder as one uncompressed tar plus a ``manifest.json`` in the format of
``docker save`` (as Docker 25+ writes both), so ``podman load`` (which reads the OCI side) and
``docker load`` (which reads ``manifest.json``) both accept it. Archives are deterministic: the
same image and tag give the same bytes.

Writes never leave half-written outputs: a new layout is built in a temp folder next to the
target and renamed into place; adding a tag to an existing layout writes each blob atomically
and replaces ``index.json`` last; an archive is written to a temp file, fsynced and renamed.

Readers take ``tag`` (``org.opencontainers.image.ref.name``, or a full ``name:tag`` as containerd
and Docker annotate it), resolve an index to ``platform`` and verify every blob's digest. An
archive without ``index.json`` is read as a docker-archive (``podman save``, older ``docker save``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError
from modelcrate.image.oci import (
    ANNOTATION_REF_NAME,
    INDEX_TYPES,
    OCI_INDEX,
    SHA256_RE,
    Image,
    Platform,
    assemble_image,
    canonical_json,
    check_platform,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from modelcrate.image.tarlayer import MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, sha256_digest

LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
MAX_BLOB_BYTES = 64 * 1024**3
_Read = Callable[[str], bytes | None]


def write_oci_layout(image: Image, directory: Path | str, tag: str) -> Path:
    """Write ``image`` as ``tag`` into the OCI layout ``directory`` (created or extended)."""
    target = Path(directory)
    _check_tag(tag)
    try:
        if target.exists():
            if not target.is_dir() or (
                any(target.iterdir()) and not (target / "oci-layout").is_file()
            ):
                raise InputError(
                    "the output exists and is not an OCI layout",
                    path=str(target),
                    hint="pick a new folder, an empty one or an existing OCI layout",
                )
            _fill_layout(image, target, tag)
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            _fill_layout(image, tmp, tag)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise _write_error(target, exc) from exc
    return target


def write_oci_archive(image: Image, file: Path | str, tag: str) -> Path:
    """Write ``image`` as a tar of an OCI layout plus docker's ``manifest.json`` (atomically)."""
    target = Path(file)
    _check_tag(tag)
    members = {
        "oci-layout": LAYOUT_FILE,
        "index.json": _index_json(image, tag, []),
        "manifest.json": _docker_manifest_json(image, tag),
        "blobs/sha256/" + image.digest.removeprefix("sha256:"): image.manifest_blob,
    }
    for digest, blob in image.blobs().items():
        members["blobs/sha256/" + digest.removeprefix("sha256:")] = blob
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for folder in ("blobs", "blobs/sha256"):
                    tar.addfile(_info(folder, tarfile.DIRTYPE, 0))
                for name in sorted(members):
                    data = members[name]
                    tar.addfile(_info(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(target, exc) from exc
        raise
    return target


def read_oci_layout(
    directory: Path | str,
    tag: str | None = None,
    *,
    platform: str | Platform | None = "linux/amd64",
) -> Image:
    """The image ``tag`` of an OCI layout folder (the only one when ``tag`` is None)."""
    root = Path(directory)
    if not (root / "index.json").is_file():
        raise InputError(
            "not an OCI image layout (no index.json)",
            path=str(root),
            hint="pass a folder written by 'modelcrate containerize --output oci:DIR' or skopeo",
        )

    def read(name: str) -> bytes | None:
        path = root / name
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc}", path=str(root)) from exc

    return _read_image(read, str(root), tag, platform)


def read_oci_archive(
    file: Path | str, tag: str | None = None, *, platform: str | Platform | None = "linux/amd64"
) -> Image:
    """The image ``tag`` of an OCI archive or docker-archive tar, read without extracting."""
    src = Path(file)
    try:
        tar = tarfile.open(src, mode="r:*")  # noqa: SIM115 -- closed below
    except (OSError, tarfile.TarError) as exc:
        raise InputError(
            f"cannot read the image archive: {exc}",
            path=str(src),
            hint="pass a tar made by 'modelcrate containerize', 'podman save' or 'docker save'",
        ) from exc
    with tar:
        try:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise InputError(f"corrupt image archive: {exc}", path=str(src)) from exc

        def read(name: str) -> bytes | None:
            member = members.get(name)
            if member is None:
                return None
            if member.size > MAX_BLOB_BYTES:
                raise InputError(f"archive member {name} is too large", path=str(src))
            fh: IO[bytes] | None = tar.extractfile(member)
            if fh is None:
                return None
            with fh:
                return fh.read()

        if "index.json" in members:
            return _read_image(read, str(src), tag, platform)
        if "manifest.json" in members:
            return _read_docker_archive(read, str(src), tag, platform)
        raise InputError(
            "the tar holds neither index.json nor manifest.json",
            path=str(src),
            hint="pass an OCI archive or a docker-archive ('podman save', 'docker save')",
        )


def _fill_layout(image: Image, root: Path, tag: str) -> None:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    if not (root / "oci-layout").is_file():
        atomic_write_bytes(root / "oci-layout", LAYOUT_FILE)
    items = {image.digest: image.manifest_blob, **image.blobs()}
    for digest, blob in sorted(items.items()):
        path = blobs / digest.removeprefix("sha256:")
        if not (path.is_file() and path.stat().st_size == len(blob)):
            atomic_write_bytes(path, blob)
    previous: list[dict[str, Any]] = []
    if (root / "index.json").is_file():
        index = (root / "index.json").read_bytes()
        parse_index(index, f"{root} index.json")  # refuse to extend a malformed layout
        previous = json.loads(index)["manifests"]
    atomic_write_bytes(root / "index.json", _index_json(image, tag, previous))


def _index_json(image: Image, tag: str, previous: list[dict[str, Any]]) -> bytes:
    """index.json with ``tag`` pointing at ``image`` (entries of other tags kept, in order)."""
    kept = [
        entry
        for entry in previous
        if (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME) != tag
    ]
    entry = image.descriptor({ANNOTATION_REF_NAME: tag}).to_json()
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*kept, entry]})


def _docker_manifest_json(image: Image, tag: str) -> bytes:
    repo_tags = [tag] if _has_name(tag) else []
    return canonical_json(
        [
            {
                "Config": "blobs/sha256/" + image.config_digest.removeprefix("sha256:"),
                "RepoTags": repo_tags,
                "Layers": [
                    "blobs/sha256/" + layer.digest.removeprefix("sha256:") for layer in image.layers
                ],
            }
        ]
    )


def _read_image(read: _Read, where: str, tag: str | None, platform: str | Platform | None) -> Image:
    index = parse_index(_need(read, "index.json", where), f"{where} index.json")
    entries = list(index.manifests)
    if tag is not None:
        entries = [e for e in entries if _tag_matches(e.annotations or {}, tag)]
    refs = sorted({(m.annotations or {}).get(ANNOTATION_REF_NAME, "") for m in index.manifests})
    if not entries or len({e.digest for e in entries}) > 1:
        what = f"no image tagged {tag!r}" if tag is not None and not entries else "several images"
        raise InputError(
            f"{what} in the layout; it holds {', '.join(r or '(untagged)' for r in refs)}",
            path=where,
            hint="name one of them after the path, e.g. oci:DIR:TAG",
        )
    want = Platform.of(platform) if platform else None
    desc = entries[0]
    blob = _blob(read, desc.digest, where)
    if media_type_of(blob, where) in INDEX_TYPES:
        nested = parse_index(blob, f"{where} nested index")
        desc = select_platform(nested, want or Platform("linux", "amd64"), where)
        blob = _blob(read, desc.digest, where)
    manifest = parse_manifest(blob, f"{where} manifest")
    config_blob = _blob(read, manifest.config.digest, where)
    blobs = {d.digest: _blob(read, d.digest, where) for d in manifest.layers}
    image = assemble_image(blob, config_blob, blobs, where)
    check_platform(image, want, where)
    return image


def _read_docker_archive(
    read: _Read, where: str, tag: str | None, platform: str | Platform | None
) -> Image:
    try:
        entries = json.loads(_need(read, "manifest.json", where))
        if tag is not None:
            entries = [
                e for e in entries if any(_name_matches(t, tag) for t in e["RepoTags"] or [])
            ]
        if len(entries) != 1:
            raise InputError(
                f"expected one image{f' tagged {tag!r}' if tag else ''} in the docker-archive, "
                f"found {len(entries)}",
                path=where,
                hint="name the image after the path, e.g. oci-archive:FILE:NAME:TAG",
            )
        config_blob = _need(read, entries[0]["Config"], where)
        layers = [_need(read, name, where) for name in entries[0]["Layers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"malformed docker-archive manifest.json: {exc}", path=where) from exc
    descs: list[dict[str, Any]] = []
    for blob in layers:
        gz = blob[:2] == b"\x1f\x8b"
        descs.append(
            {
                "mediaType": MEDIA_TYPE_LAYER_GZIP if gz else MEDIA_TYPE_LAYER_TAR,
                "digest": sha256_digest(blob),
                "size": len(blob),
            }
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config_blob),
            "size": len(config_blob),
        },
        "layers": descs,
    }
    blobs = {str(d["digest"]): b for d, b in zip(descs, layers, strict=True)}
    image = assemble_image(canonical_json(manifest), config_blob, blobs, where)
    for layer in image.layers:
        if layer.media_type == MEDIA_TYPE_LAYER_TAR and layer.diff_id != layer.digest:
            raise InputError(f"layer {layer.digest} does not match its diff_id", path=where)
    check_platform(image, Platform.of(platform) if platform else None, where)
    return image


def _blob(read: _Read, digest: str, where: str) -> bytes:
    if not SHA256_RE.match(digest):
        raise InputError(f"unsupported digest {digest!r}", path=where)
    data = _need(read, "blobs/sha256/" + digest.removeprefix("sha256:"), where)
    if sha256_digest(data) != digest:
        raise InputError(
            f"blob {digest} does not match its digest",
            path=where,
            hint="the layout is corrupt; write or export it again",
        )
    return data


def _need(read: _Read, name: str, where: str) -> bytes:
    data = read(name)
    if data is None:
        raise InputError(
            f"the image is incomplete: {name} is missing",
            path=where,
            hint="write or export the image again",
        )
    return data


def _tag_matches(annotations: dict[str, str] | Any, tag: str) -> bool:
    names = [annotations.get(ANNOTATION_REF_NAME), annotations.get(ANNOTATION_CONTAINERD_NAME)]
    return any(isinstance(n, str) and _name_matches(n, tag) for n in names)


def _name_matches(name: str, tag: str) -> bool:
    """``tag`` equals ``name`` or names it without the registry part (``docker.io/library/``)."""
    return name == tag or name.endswith("/" + tag)


def _has_name(tag: str) -> bool:
    """True for ``name:tag`` references, False for a bare tag."""
    last = tag.rsplit("/", 1)[-1]
    return ":" in last or "/" in tag


def _check_tag(tag: str) -> None:
    if not tag or any(c.isspace() for c in tag) or len(tag) > 255:
        raise InputError(f"bad image tag {tag!r}", hint="use TAG or NAME:TAG, e.g. iris:1")


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_error(target: Path, exc: OSError) -> InputError:
    return InputError(
        f"cannot write the image: {exc.strerror or exc}",
        path=str(target),
        hint="check that the folder exists, is writable and has free space",
    )
