"""The three modelcrate layers on a base image, and the image config that serves the crate.

Layers, base first, ordered by how often they change::

    1 wheels   /opt/modelcrate/site-packages/...     the crate's lock      (see wheels.py)
    2 model    /opt/modelcrate/crate/model/...       the crate's artifacts
    3 app      /opt/modelcrate/crate/{crate.yaml, requirements.lock, scan.json, signature.json,
               sbom.cdx.json} and /opt/modelcrate/app/modelcrate/...  (the runtime's source)

A change to modelcrate's code rebuilds layer 3 only; layers 1 and 2 keep their digests. Every
crate file is read once, checked against the sha256 that ``crate.yaml`` records, and those same
bytes go into the layer. Files are owned by root and readable by all; the service runs as the
numeric user 10001, which can read but not change them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import Manifest
    from modelcrate.image.base import BaseImage
    from modelcrate.image.oci import HistoryEntry, Image, ImageConfig
    from modelcrate.image.tarlayer import Layer, LayerFile

ROOT: Final = "/opt/modelcrate"
CRATE_ROOT: Final = f"{ROOT}/crate"
APP_ROOT: Final = f"{ROOT}/app"
SITE_PACKAGES: Final = f"{ROOT}/site-packages"
USER: Final = "10001:10001"
PORT: Final = 8080
ROLES: Final = ("wheels", "model", "app")
_HEALTH_PROBE: Final = (
    "import sys, urllib.request as u; "
    f"sys.exit(0 if u.urlopen('http://127.0.0.1:{PORT}/readyz', timeout=4).status == 200 else 1)"
)


@dataclass(frozen=True)
class CrateFiles:
    """A crate's files, read once and verified against its manifest."""

    path: Path
    manifest: Manifest
    model: tuple[tuple[str, bytes], ...]  # ("model/...", bytes), manifest order
    side: tuple[tuple[str, bytes], ...]  # ("crate.yaml", bytes), ... sorted


def read_crate(crate_dir: Path) -> CrateFiles:
    """The crate at ``crate_dir``, verified (:func:`~modelcrate.crate.layout.verify_crate`),
    with every artifact and the lock checked again on the very bytes that will be packed."""
    from modelcrate.crate.layout import SIDE_FILES, verify_crate

    crate_dir = Path(crate_dir)
    manifest = verify_crate(crate_dir)
    model = []
    for art in manifest.artifacts:
        data = _read(crate_dir / art.path)
        if hashlib.sha256(data).hexdigest() != art.sha256:
            raise _changed(crate_dir / art.path)
        model.append((art.path, data))
    side = []
    for name in sorted(SIDE_FILES):
        path = crate_dir / name
        if not path.is_file():
            continue  # an optional one (older crates have no SBOM); verify_crate checked the rest
        data = _read(path)
        if name == "requirements.lock" and hashlib.sha256(data).hexdigest() != manifest.lock_sha256:
            raise _changed(path)
        side.append((name, data))
    return CrateFiles(crate_dir, manifest, tuple(model), tuple(side))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read a crate file: {exc.strerror or exc}",
            path=str(path),
            hint="check the store's permissions, or rebuild the crate",
        ) from exc


def _changed(path: Path) -> InputError:
    return InputError(
        "a crate file changed while it was being packed",
        path=str(path),
        hint="do not modify the store during containerize; run it again",
    )


def model_layer(crate: CrateFiles, *, epoch: int = 0) -> Layer:
    """Layer 2: the model artifacts under ``/opt/modelcrate/crate/model``."""
    from modelcrate.image.tarlayer import LayerFile, build_layer

    return build_layer(
        [LayerFile(f"{CRATE_ROOT}/{rel}", data, 0o644) for rel, data in crate.model], epoch=epoch
    )


def default_app_source() -> Path:
    """The installed ``modelcrate`` package: the runtime the image runs."""
    import modelcrate

    return Path(modelcrate.__file__).resolve().parent


def app_files(source: Path) -> list[LayerFile]:
    """The modelcrate package at ``source`` as ``/opt/modelcrate/app/modelcrate/...``, without
    bytecode caches (the image never writes bytecode)."""
    from modelcrate.image.tarlayer import LayerFile

    if not (source / "__init__.py").is_file() or not (source / "__main__.py").is_file():
        raise InputError(
            "not the modelcrate package source (no __init__.py and __main__.py)",
            path=str(source),
            hint="pass the folder of the modelcrate package, e.g. src/modelcrate",
        )
    return list(_walk(source, f"{APP_ROOT}/modelcrate", LayerFile))


def _walk(source: Path, dest: str, make: type[LayerFile]) -> Iterator[LayerFile]:
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        rel = Path(dirpath).relative_to(source).as_posix()
        base = dest if rel == "." else f"{dest}/{rel}"
        yield make(base, None, 0o755)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith((".pyc", ".pyo")) or name.startswith(".") or not path.is_file():
                continue  # caches, editor files, and links (the package has none)
            yield make(f"{base}/{name}", path.read_bytes(), 0o644)


def app_layer(crate: CrateFiles, files: list[LayerFile], *, epoch: int = 0) -> Layer:
    """Layer 3: the crate's side files and the modelcrate runtime."""
    from modelcrate.image.tarlayer import LayerFile, build_layer

    side = [LayerFile(f"{CRATE_ROOT}/{name}", data, 0o644) for name, data in crate.side]
    return build_layer([*side, *files], epoch=epoch)


def source_digest(files: list[LayerFile]) -> str:
    """One digest for the runtime's source tree (paths and contents): the image's revision."""
    sha = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        sha.update(f.path.encode() + b"\0")
        if f.data is not None:
            sha.update(hashlib.sha256(f.data).digest())
    return "sha256:" + sha.hexdigest()


def image_config(
    base: BaseImage, manifest: Manifest, *, revision: str, has_sbom: bool, lock_sha256: str
) -> ImageConfig:
    """User, entrypoint, env, port, health check, labels and history of the final image."""
    from modelcrate import __version__
    from modelcrate.crate.layout import SBOM_FILE
    from modelcrate.image.oci import HealthCheck, HistoryEntry, ImageConfig

    python = base.python.path
    env = _merged_env(
        base.image.config.get("config", {}).get("Env") or [],
        {
            "PYTHONPATH": f"{APP_ROOT}:{SITE_PACKAGES}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            # the non-root user has no home folder: libraries that cache (ONNX Runtime) use /tmp
            "HOME": "/tmp",
        },
    )
    labels = {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.created": manifest.created,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": f"modelcrate {__version__}",
        "org.opencontainers.image.base.digest": base.digest,
        "io.modelcrate.crate.name": manifest.name,
        "io.modelcrate.crate.version": manifest.version,
        "io.modelcrate.lock.sha256": lock_sha256,
        "io.modelcrate.python": f"{base.python.version} {python}",
    }
    if base.ref.transport == "registry":
        labels["org.opencontainers.image.base.name"] = base.name
    elif base.ref.tag:  # a local layout: its tag, never this machine's path (reproducible)
        labels["org.opencontainers.image.base.name"] = base.ref.tag
    if has_sbom:
        labels["io.modelcrate.sbom"] = f"{CRATE_ROOT}/{SBOM_FILE}"
    ours = (
        HistoryEntry(
            f"modelcrate: wheels of requirements.lock ({lock_sha256[:12]})", manifest.created
        ),
        HistoryEntry(
            f"modelcrate: model of crate {manifest.name}:{manifest.short_version}", manifest.created
        ),
        HistoryEntry(
            f"modelcrate: crate files and modelcrate {__version__} runtime", manifest.created
        ),
    )
    return ImageConfig(
        architecture=base.platform.architecture,
        os=base.platform.os,
        variant=base.platform.variant,
        user=USER,
        entrypoint=(
            python,
            "-m",
            "modelcrate",
            "serve",
            CRATE_ROOT,
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
        ),
        env=env,
        exposed_ports=(f"{PORT}/tcp",),
        labels=labels,
        working_dir=ROOT,
        stop_signal="SIGTERM",
        healthcheck=HealthCheck(test=("CMD", python, "-c", _HEALTH_PROBE)),
        created=manifest.created,
        history=(*_base_history(base), *ours),
    )


def _merged_env(base_env: list[str], ours: dict[str, str]) -> tuple[str, ...]:
    """The base's variables (PATH, LANG, ...) in order, ours added or overriding."""
    out = [e for e in base_env if isinstance(e, str) and e.partition("=")[0] not in ours]
    return (*out, *(f"{k}={v}" for k, v in ours.items()))


def _base_history(base: BaseImage) -> list[HistoryEntry]:
    """The base's history as it is, or one plain entry per base layer when it has none (or one
    that does not count its layers right): history must list every layer."""
    from modelcrate.image.oci import HistoryEntry

    raw = base.image.config.get("history")
    entries = []
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict):
                break
            entries.append(
                HistoryEntry(
                    created_by=str(item.get("created_by", "")),
                    created=item.get("created") if isinstance(item.get("created"), str) else None,
                    comment=item.get("comment") if isinstance(item.get("comment"), str) else None,
                    empty_layer=bool(item.get("empty_layer", False)),
                )
            )
    if sum(1 for e in entries if not e.empty_layer) == len(base.image.layers):
        return entries
    return [HistoryEntry("base image layer") for _ in base.image.layers]


def assemble(
    base: BaseImage,
    layers: tuple[Layer, Layer, Layer],
    config: ImageConfig,
    *,
    docker: bool = False,
) -> Image:
    """The final image: base layers, then wheels, model, app (``docker``: schema 2 types)."""
    from modelcrate.image.oci import build_image
    from modelcrate.image.tarlayer import (
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_TAR,
        MEDIA_TYPE_LAYER_GZIP,
        MEDIA_TYPE_LAYER_TAR,
    )

    oci_type = {DOCKER_LAYER_GZIP: MEDIA_TYPE_LAYER_GZIP, DOCKER_LAYER_TAR: MEDIA_TYPE_LAYER_TAR}
    lower = [
        replace(b, media_type=oci_type.get(b.media_type, b.media_type)) for b in base.image.layers
    ]
    return build_image(config, [*lower, *layers], docker=docker)
