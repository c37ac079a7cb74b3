"""Layer 1: the crate's third-party wheels, installed for the image's platform, cached.

``pip install --target`` of the host interpreter installs the locked wheels for the *target*
(``--platform``/``--python-version``/``--implementation``/``--abi``, ``--only-binary=:all:``):
wheels are only unpacked, never built or run, and ``--require-hashes`` checks every file
against the lock. The files land under ``/opt/modelcrate/site-packages`` in the image.

What pip writes that belongs to the build machine is left out: ``bin/`` (console scripts whose
``#!`` names this host's Python; the image runs ``python -m``) and those scripts' lines in each
``RECORD``. So the layer depends only on the lock, the target and the layer format, and is cached
under that key (``<store>/image-cache/wheels-<key>.tar.gz`` + ``.json``): a warm build reads the
blob, checks its sha256 and does no pip work at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.image.tarlayer import Layer, LayerFile

SITE_PACKAGES: Final = "/opt/modelcrate/site-packages"
FORMAT: Final = "modelcrate.image.wheels/v1"  # bump when the layer's content rules change
PIP_TIMEOUT_S: Final = 900.0
# glibc baselines a manylinux wheel may need; the lock is resolved for manylinux_2_28.
MANYLINUX_MAX: Final = 28
_ARCH: Final = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
_NO_MATCH_RE = re.compile(r"(?:No matching distribution found for|requirement) ([^\s(]+)")


@dataclass(frozen=True)
class WheelLayer:
    """The wheels layer, where it came from, and what it holds."""

    layer: Layer
    key: str  # the cache key (sha256 hex)
    cached: bool
    packages: tuple[str, ...]  # "name==version" from the lock, sorted


def pip_platforms(platform: str) -> list[str]:
    """The ``--platform`` tags pip accepts for ``platform``: every manylinux baseline up to
    the lock's (pip does not expand ``manylinux_2_28`` to older ones itself)."""
    arch = _ARCH.get(platform)
    if arch is None:
        raise InputError(
            f"unsupported image platform {platform!r}",
            hint=f"use one of: {', '.join(sorted(_ARCH))}",
        )
    low = 17 if arch == "aarch64" else 5
    tags = [f"manylinux_2_{n}_{arch}" for n in range(MANYLINUX_MAX, low - 1, -1)]
    legacy = ["manylinux2014"] + (["manylinux2010", "manylinux1"] if arch == "x86_64" else [])
    return tags + [f"{name}_{arch}" for name in legacy]


# Bump when slim.py changes what it leaves out; "nostrip" layers come from hosts without binutils.
_SLIM_VERSION = "2" if shutil.which("strip") else "2-nostrip"


def cache_key(lock_sha256: str, *, python_version: str, platform: str, epoch: int) -> str:
    doc = {
        "format": FORMAT,
        "lock_sha256": lock_sha256,
        "python": python_version,
        "platform": platform,
        "root": SITE_PACKAGES,
        "epoch": epoch,
        "slim": _SLIM_VERSION,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def locked_packages(lock: bytes) -> tuple[str, ...]:
    text = lock.decode("utf-8", "replace")
    return tuple(sorted(f"{m.group(1).lower()}=={m.group(2)}" for m in _PIN_RE.finditer(text)))


def wheel_layer(
    lock_path: Path,
    *,
    python_version: str,
    platform: str = "linux/amd64",
    cache_dir: Path | None = None,
    epoch: int = 0,
    expected_sha256: str | None = None,
    pip_args: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> WheelLayer:
    """The wheels layer for the lock at ``lock_path`` (read once; with ``expected_sha256`` its
    bytes must match it, as the crate's ``lock_sha256`` says). ``pip_args`` go to pip as they
    are (e.g. ``--no-index --find-links DIR`` for an offline wheelhouse)."""
    try:
        lock = Path(lock_path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the lock file: {exc.strerror or exc}",
            path=str(lock_path),
            hint="the crate is incomplete; rebuild it or import it again",
        ) from exc
    sha = hashlib.sha256(lock).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise InputError(
            "requirements.lock does not match the lock_sha256 in crate.yaml",
            path=str(lock_path),
            hint="do not edit crates; rebuild it or import it again from a trusted export",
        )
    key = cache_key(sha, python_version=python_version, platform=platform, epoch=epoch)
    packages = locked_packages(lock)
    if cache_dir is not None:
        hit = _load_cached(cache_dir, key)
        if hit is not None:
            return WheelLayer(hit, key, True, packages)
    if progress is not None:
        progress("pip")
    with tempfile.TemporaryDirectory(prefix="modelcrate-wheels-") as tmp:
        private = Path(tmp, "requirements.lock")
        private.write_bytes(lock)  # pip reads the bytes that were hashed, not the crate's path
        target = Path(tmp, "site-packages")
        _pip_install(private, target, python_version, platform, pip_args)
        if progress is not None:
            progress("layer")
        from modelcrate.image.tarlayer import build_layer

        layer = build_layer(_layer_files(target), epoch=epoch)
    if cache_dir is not None:
        _store_cached(cache_dir, key, layer)
    return WheelLayer(layer, key, False, packages)


def _pip_install(
    lock: Path, target: Path, python_version: str, platform: str, extra: Sequence[str]
) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target)]
    cmd += ["--only-binary=:all:", "--no-deps", "--require-hashes", "--no-compile"]
    cmd += ["--python-version", python_version, "--implementation", "cp"]
    cmd += ["--abi", "cp" + python_version.replace(".", "")]
    for tag in pip_platforms(platform):
        cmd += ["--platform", tag]
    cmd += ["--disable-pip-version-check", "--no-input", "--quiet", *extra, "-r", str(lock)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PIP_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise InputError(
            f"installing the locked wheels took longer than {PIP_TIMEOUT_S:.0f} s",
            hint="check the network or the package index (PIP_INDEX_URL), then try again",
        ) from exc
    if proc.returncode != 0:
        raise _pip_error(proc.stderr.decode("utf-8", "replace"), python_version, platform)


def _pip_error(stderr: str, python_version: str, platform: str) -> InputError:
    errors = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    detail = " ".join(errors[-8:])[:800]
    if "DO NOT MATCH THE HASHES" in stderr:
        return InputError(
            f"a downloaded wheel does not match the hash in requirements.lock: {detail}",
            path="requirements.lock",
            hint="the package index served different bytes than when the crate was locked; "
            "check the index (PIP_INDEX_URL) and do not edit the lock",
        )
    missing = _NO_MATCH_RE.search(stderr)
    if missing is not None or "from versions: none" in stderr:
        name = missing.group(1) if missing else "a locked package"
        return InputError(
            f"no wheel of {name} for CPython {python_version} on {platform} "
            f"(manylinux_2_{MANYLINUX_MAX} or older): {detail}",
            path="requirements.lock",
            hint="containerize installs binary wheels only and never builds from source; pin a "
            "version that publishes such wheels and rebuild the crate",
        )
    return InputError(
        f"pip could not install the locked wheels: {detail}",
        path="requirements.lock",
        hint="check the network or the package index (PIP_INDEX_URL), then try again",
    )


def _layer_files(target: Path) -> Iterator[LayerFile]:
    """Everything pip put under ``target``, as layer entries, minus host-specific files."""
    from modelcrate.image import slim
    from modelcrate.image.tarlayer import LayerFile

    strip = slim.strip_tool()
    for dirpath, dirnames, filenames in os.walk(target):
        here = Path(dirpath)
        rel_dir = here.relative_to(target).as_posix()
        if rel_dir == ".":
            dirnames[:] = sorted(d for d in dirnames if d != "bin")
        else:
            dirnames.sort()
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and slim.keep_dir(rel_dir, d)]
        base = SITE_PACKAGES if rel_dir == "." else f"{SITE_PACKAGES}/{rel_dir}"
        if rel_dir != ".":
            yield LayerFile(path=base, data=None, mode=0o755)
        for name in sorted(filenames):
            path = here / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or name.endswith((".pyc", ".pyo")):
                continue  # wheels hold regular files only; pip made nothing else we need
            if not slim.keep_file(name):
                continue  # headers, stubs, sources: nothing a server imports (see slim.py)
            data = path.read_bytes()
            if slim.strippable(name, rel_dir):
                data = slim.strip_debug(data, strip)
            if name == "RECORD" and rel_dir.endswith(".dist-info"):
                data = _without_outside_paths(data)
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            yield LayerFile(path=f"{base}/{name}", data=data, mode=mode)


def _without_outside_paths(record: bytes) -> bytes:
    """RECORD without the lines for files outside site-packages (the dropped ``bin/``)."""
    lines = record.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(ln for ln in lines if not ln.startswith(("../", '"../'))).encode()


def _load_cached(cache_dir: Path, key: str) -> Layer | None:
    """The cached layer, or None if absent, incomplete or corrupt (then it is rebuilt)."""
    from modelcrate.image.tarlayer import Layer

    try:
        meta = json.loads((cache_dir / f"wheels-{key}.json").read_text())
        blob = (cache_dir / f"wheels-{key}.tar.gz").read_bytes()
        digest, diff_id, media_type = meta["digest"], meta["diff_id"], meta["media_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
        return None
    return Layer(blob=blob, digest=digest, diff_id=diff_id, size=len(blob), media_type=media_type)


def _store_cached(cache_dir: Path, key: str, layer: Layer) -> None:
    """Blob first, then its metadata: the ``.json`` only exists once the blob is whole."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_dir / f"wheels-{key}.tar.gz", layer.blob)
        meta = {"digest": layer.digest, "diff_id": layer.diff_id, "media_type": layer.media_type}
        atomic_write_bytes(cache_dir / f"wheels-{key}.json", json.dumps(meta).encode())
    except OSError:
        return  # a cache that cannot be written only makes the next build slower
