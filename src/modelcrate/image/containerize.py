"""``modelcrate containerize``: a crate to an OCI image, without Docker.

Steps, each reported through ``progress`` before it starts: ``crate`` (read and verify),
``base`` (pull or read, platform and Python checks), ``wheels`` (layer 1, cached by the lock),
``libraries`` (every shared library the wheels' native code links is in the wheels or the base,
see :mod:`modelcrate.image.elfdeps`), ``model`` (layer 2), ``app`` (layer 3), ``config``, then
``write`` (an OCI layout or archive) and ``push`` (to a registry). The image is the same, byte
for byte, for the same crate, base, modelcrate source and ``SOURCE_DATE_EPOCH``; so is its
digest.

Outputs are written atomically by :mod:`modelcrate.image.layout`; a push is reported only once
the registry accepted the manifest (blobs it already has are skipped after a HEAD).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.store import Store
    from modelcrate.image.base import ImageRef
    from modelcrate.image.elfdeps import LibraryReport
    from modelcrate.image.oci import Image

STEPS: Final = (
    "crate", "base", "wheels", "libraries", "model", "app", "config", "write", "push"
)  # fmt: skip
# The image platform each crate platform (manifest python.platform) is locked for.
CRATE_PLATFORMS: Final = {"linux_x86_64": "linux/amd64", "linux_aarch64": "linux/arm64"}
CACHE_DIR: Final = "image-cache"
FORMATS: Final = ("oci", "docker")


@dataclass(frozen=True)
class LayerInfo:
    role: str  # "base", "wheels", "model" or "app"
    digest: str
    diff_id: str
    size: int  # compressed bytes, as stored and pushed


@dataclass(frozen=True)
class Pushed:
    """A push the registry accepted (its manifest PUT succeeded)."""

    reference: str  # host/repo:tag
    digest: str
    bytes_sent: int
    blobs_sent: int
    blobs_skipped: int  # already in the repository (HEAD answered 200)
    blobs_mounted: int = 0  # taken from the base's repository on the same registry

    @property
    def pinned(self) -> str:
        return f"{self.reference.rpartition(':')[0]}@{self.digest}"


@dataclass(frozen=True)
class ImageResult:
    digest: str
    config_digest: str
    crate: str  # name:short-version
    crate_version: str
    base: str
    base_digest: str
    python: str  # interpreter path in the image
    python_version: str
    platform: str
    layers: tuple[LayerInfo, ...]
    wheels_cached: bool
    written: tuple[str, ...]  # "oci:DIR:TAG" / "oci-archive:FILE:TAG"
    pushed: Pushed | None
    steps: tuple[tuple[str, float], ...]
    image: Image = field(repr=False, compare=False)
    libraries: LibraryReport | None = None  # the shared-library check (see elfdeps)

    @property
    def base_size(self) -> int:
        return sum(layer.size for layer in self.layers if layer.role == "base")

    @property
    def added_size(self) -> int:
        return sum(layer.size for layer in self.layers if layer.role != "base")

    @property
    def pushed_bytes(self) -> int:
        return 0 if self.pushed is None else self.pushed.bytes_sent


def containerize(
    crate: str | Path,
    *,
    base: str | None = None,
    platform: str = "linux/amd64",
    output: str | None = None,
    push: str | None = None,
    insecure_registry: bool = False,
    store: Store | Path | None = None,
    image_format: str = "oci",
    app_source: Path | None = None,
    pip_args: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> ImageResult:
    """Build the image of ``crate`` (``NAME[:VERSION]`` in the store, or a crate folder).

    ``output``: ``oci:DIR[:TAG]`` or ``oci-archive:FILE[:TAG]``; ``push``:
    ``HOST[:PORT]/REPO[:TAG]``; ``image_format``: ``oci`` (OCI media types) or ``docker``
    (Docker schema 2: the same blobs, and podman then honours the health check);
    ``app_source``: the modelcrate package folder to ship (default: the installed one);
    ``pip_args``: extra pip options for the wheels layer.
    """
    from modelcrate._epoch import source_date_epoch
    from modelcrate.crate.layout import SBOM_FILE
    from modelcrate.crate.store import Store
    from modelcrate.image.assemble import (
        app_files,
        app_layer,
        assemble,
        default_app_source,
        image_config,
        model_layer,
        read_crate,
        source_digest,
    )
    from modelcrate.image.base import DEFAULT_BASE, check_python_version, resolve_base
    from modelcrate.image.elfdeps import check_libraries, scan_layer
    from modelcrate.image.wheels import wheel_layer

    if image_format not in FORMATS:
        raise InputError(
            f"unknown image format {image_format!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )
    out_ref = _output_ref(output) if output is not None else None
    push_ref = _push_ref(push) if push is not None else None
    env_hosts = _named_registry(push_ref, base)
    the_store = store if isinstance(store, Store) else Store.default(_absolute(store))
    cache = the_store.root / CACHE_DIR
    epoch = source_date_epoch()
    timer = _Timer(progress)

    timer.step("crate")
    files = read_crate(_crate_dir(crate, the_store))
    manifest = files.manifest
    ref = f"{manifest.name}:{manifest.short_version}"
    _check_platform(manifest.python.platform, platform, ref)

    timer.step("base")
    base_image = resolve_base(
        base or DEFAULT_BASE,
        platform=platform,
        insecure=insecure_registry,
        cache_dir=cache,
        env_hosts=env_hosts,
    )
    check_python_version(base_image, manifest.python.version, crate=ref)

    timer.step("wheels")
    wheels = wheel_layer(
        files.path / "requirements.lock",
        python_version=manifest.python.version,
        platform=platform,
        cache_dir=cache,
        epoch=epoch,
        expected_sha256=manifest.lock_sha256,
        pip_args=pip_args,
    )

    timer.step("libraries")
    libraries = check_libraries(
        scan_layer(wheels.layer, platform=platform, cache_dir=cache), base_image, crate=ref
    )

    timer.step("model")
    model = model_layer(files, epoch=epoch)

    timer.step("app")
    runtime = app_files(app_source or default_app_source())
    app = app_layer(files, runtime, epoch=epoch)

    timer.step("config")
    config = image_config(
        base_image,
        manifest,
        revision=source_digest(runtime),
        has_sbom=any(name == SBOM_FILE for name, _ in files.side),
        lock_sha256=manifest.lock_sha256,
    )
    image = assemble(
        base_image, (wheels.layer, model, app), config, docker=image_format == "docker"
    )

    written: list[str] = []
    if out_ref is not None:
        timer.step("write")
        written.append(_write(image, out_ref, manifest.name, manifest.short_version))
    pushed = None
    if push_ref is not None:
        timer.step("push")
        same_registry = base_image.ref.transport == "registry" and (
            base_image.ref.location == push_ref.location
        )
        mount = base_image.ref.repository if same_registry else None
        pushed = push_image(
            image, push_ref, insecure=insecure_registry, mount_from=mount, env_hosts=env_hosts
        )

    roles = ["base"] * len(base_image.image.layers) + ["wheels", "model", "app"]
    return ImageResult(
        digest=image.digest,
        config_digest=image.config_digest,
        crate=ref,
        crate_version=manifest.version,
        base=base_image.name,
        base_digest=base_image.digest,
        python=base_image.python.path,
        python_version=base_image.python.version,
        platform=platform,
        layers=tuple(
            LayerInfo(role, layer.digest, layer.diff_id, layer.size)
            for role, layer in zip(roles, image.layers, strict=True)
        ),
        wheels_cached=wheels.cached,
        written=tuple(written),
        pushed=pushed,
        steps=timer.finish(),
        image=image,
        libraries=libraries,
    )


def push_image(
    image: Image,
    ref: ImageRef,
    *,
    insecure: bool = False,
    mount_from: str | None = None,
    env_hosts: tuple[str, ...] | None = None,
) -> Pushed:
    """Push ``image`` to ``ref``: blobs the registry lacks (HEAD first; with ``mount_from``, a
    repository of the same registry, its blobs are mounted, not uploaded), then the manifest.
    Returns only after the manifest PUT succeeded; a refusal raises (an InputError).
    ``env_hosts``: where the ``MODELCRATE_REGISTRY_*`` credentials go (default: ``ref``'s
    registry, the one named to push to)."""
    from modelcrate.image.registry import RegistryClient

    assert ref.repository is not None
    assert ref.tag is not None
    hosts = (ref.location,) if env_hosts is None else env_hosts
    client = RegistryClient(ref.location, insecure=insecure, env_hosts=hosts)
    done = client.push_image(image, ref.repository, ref.tag, mount_from=mount_from)
    if done.digest != image.digest:  # pragma: no cover - the client checks what it sends
        raise InputError(f"the registry stored the image as {done.digest}, not {image.digest}")
    return Pushed(
        reference=str(ref),
        digest=done.digest,
        bytes_sent=done.uploaded_bytes + len(image.manifest_blob),
        blobs_sent=done.uploaded_blobs,
        blobs_skipped=done.skipped_blobs,
        blobs_mounted=done.mounted_blobs,
    )


def _named_registry(push_ref: ImageRef | None, base: str | None) -> tuple[str, ...]:
    """The registry the ``MODELCRATE_REGISTRY_*`` credentials are for, when
    ``MODELCRATE_REGISTRY_HOST`` does not say: the one pushed to, else an explicit ``--base``
    in a registry; never the default base (Docker Hub) nor any host a registry names."""
    if push_ref is not None:
        return (push_ref.location,)
    if base is not None:
        from modelcrate.image.base import parse_image_ref

        ref = parse_image_ref(base)
        if ref.transport == "registry":
            return (ref.location,)
    return ()


def _crate_dir(crate: str | Path, store: Store) -> Path:
    path = Path(crate)
    if path.is_dir() and (path / "crate.yaml").is_file():
        return path
    return store.resolve(str(crate))


def _check_platform(crate_platform: str, platform: str, ref: str) -> None:
    locked = CRATE_PLATFORMS.get(crate_platform)
    if locked != platform:
        raise InputError(
            f"crate {ref} is locked for {crate_platform}, so its image platform is "
            f"{locked or 'unsupported'}, not {platform}",
            hint=f"pass --platform {locked}" if locked else "rebuild the crate for linux_x86_64",
        )


def _output_ref(text: str) -> ImageRef:
    from modelcrate.image.base import parse_image_ref

    if not text.startswith(("oci:", "oci-archive:")):
        raise InputError(
            f"cannot write the image to {text!r}",
            hint="use --output oci:DIR[:TAG] (an OCI layout) or oci-archive:FILE[:TAG] (a tar "
            "that podman load and docker load accept); use --push for a registry",
        )
    ref = parse_image_ref(text)
    parent = Path(ref.location).resolve().parent
    if not parent.is_dir():
        raise InputError(
            "the output's folder does not exist", path=str(parent), hint="create it first"
        )
    return ref


def _push_ref(text: str) -> ImageRef:
    from modelcrate.image.base import DOCKER_HUB, parse_registry_ref

    ref = parse_registry_ref(text)
    if ref.digest is not None or "/" not in text.partition("@")[0] or ref.location == DOCKER_HUB:
        raise InputError(
            f"cannot push to {text!r}: name the registry, the repository and a tag",
            hint="write HOST[:PORT]/REPO[:TAG], e.g. 127.0.0.1:5000/models/iris:v1",
        )
    return ref


def _write(image: Image, ref: ImageRef, name: str, short: str) -> str:
    from modelcrate.image.layout import write_oci_archive, write_oci_layout

    if ref.transport == "oci":
        tag = ref.tag or short
        write_oci_layout(image, Path(ref.location), tag)
    else:
        tag = ref.tag or f"modelcrate/{name}:{short}"
        write_oci_archive(image, Path(ref.location), tag)
    return f"{ref.transport}:{ref.location}:{tag}"


class _Timer:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self._progress = progress
        self._steps: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def step(self, name: str) -> None:
        self._close()
        if self._progress is not None:
            self._progress(name)
        self._current = (name, time.perf_counter())

    def _close(self) -> None:
        if self._current is not None:
            name, start = self._current
            self._steps.append((name, time.perf_counter() - start))
            self._current = None

    def finish(self) -> tuple[tuple[str, float], ...]:
        self._close()
        return tuple(self._steps)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser().absolute()
