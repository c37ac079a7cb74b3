"""``modelcrate dockerfile``: a production Dockerfile and its build context for a crate.

For teams that build with Docker, BuildKit, podman or kaniko instead of ``containerize``. The
context folder holds everything the build needs, nothing else::

    Dockerfile
    .dockerignore
    crate/            the crate's files, verified (crate.yaml, model/, requirements.lock, ...)
    app/modelcrate/   the modelcrate runtime source (what ``modelcrate serve`` runs)
    gpu/              with --gpu: the GPU lock and its SBOM

The Dockerfile is multi-stage: a builder installs the locked wheels (``--require-hashes``,
``--only-binary=:all:``) into one folder; the final stage copies that folder, then the model,
then the crate files, then the runtime source, ordered from least to most often changed, so a
code change rebuilds only the last layer. The service runs as the numeric user 10001, through
an exec-form entrypoint, with a health check on ``/readyz``. With ``gpu=True`` the base is an
NVIDIA CUDA runtime image with Python from the distribution, and ``onnxruntime-gpu`` replaces
``onnxruntime`` in the lock (see :mod:`.gpu_lock`).

The context is written to a temp folder beside ``out_dir`` and renamed into place; a folder
this function wrote before is replaced, any other non-empty folder is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from modelcrate._epoch import source_date_epoch
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import Manifest

__all__ = [
    "DockerContext",
    "default_base",
    "render_dockerfile",
    "write_dockerfile",
]

ROOT: Final = "/opt/modelcrate"
PORT: Final = 8080
USER: Final = "10001:10001"
MARKER: Final = ".modelcrate-context"
CUDA_BASES: Final = {
    "3.10": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
    "3.11": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",  # python3.11 from jammy-updates
    "3.12": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04",
}
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,254}$")
_IGNORE = (
    "# The context holds only what the image needs; keep strays out.\n"
    "**/__pycache__\n**/*.py[co]\n.git\n"
)


@dataclass(frozen=True)
class DockerContext:
    """A written build context: where, for which crate, and what it installs."""

    path: Path
    name: str
    version: str
    base: str
    gpu: bool
    python: str  # the interpreter the image runs, e.g. "python3.11"
    lock_sha256: str  # of the lock the image installs
    files: tuple[str, ...]  # every file of the context, relative, sorted
    changes: tuple[str, ...] = ()  # what the GPU variant changed in the lock, in words

    @property
    def dockerfile(self) -> Path:
        return self.path / "Dockerfile"

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version.removeprefix('sha256:')[:12]}"


def default_base(python: str, *, gpu: bool = False) -> str:
    """``python:X.Y-slim``, or with ``gpu`` the CUDA runtime image for that Python."""
    if not gpu:
        return f"python:{python}-slim"
    base = CUDA_BASES.get(python)
    if base is None:
        raise InputError(
            f"no default CUDA base for Python {python}",
            hint="pass --base with an apt-based CUDA runtime image that offers python"
            f"{python} (e.g. an nvidia/cuda cudnn-runtime tag)",
        )
    return base


def write_dockerfile(
    crate_dir: Path,
    out_dir: Path,
    *,
    base: str | None = None,
    gpu: bool = False,
    lock_cache: Path | None = None,
    app_source: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DockerContext:
    """Write the Dockerfile and build context for the crate at ``crate_dir`` into ``out_dir``.

    ``lock_cache``: where GPU locks are cached (the store's lock cache); ``app_source``: the
    modelcrate package to ship (default: the one running).
    """
    from modelcrate.crate.layout import LOCK_FILE, SBOM_FILE
    from modelcrate.crate.sbom import sbom_json
    from modelcrate.image.assemble import APP_ROOT, app_files, default_app_source, read_crate

    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    _check_destination(out)
    say("verify the crate")
    crate = read_crate(Path(crate_dir))
    manifest = crate.manifest
    chosen = base or default_base(manifest.python.version, gpu=gpu)
    if not _REF_RE.match(chosen):
        raise InputError(
            f"{chosen!r} is not an image reference",
            hint="pass --base as [REGISTRY/]REPO[:TAG|@DIGEST], e.g. python:3.11-slim",
        )
    files: dict[str, bytes] = {f"crate/{rel}": data for rel, data in crate.model}
    files.update({f"crate/{name}": data for name, data in crate.side})
    lock = files[f"crate/{LOCK_FILE}"]
    if f"crate/{SBOM_FILE}" not in files:  # a crate made before SBOMs: the image still gets one
        files[f"crate/{SBOM_FILE}"] = sbom_json(manifest, lock)
    changes: tuple[str, ...] = ()
    if gpu:
        from modelcrate.image.gpu_lock import gpu_lock

        say("lock onnxruntime-gpu")
        if manifest.runtime.kind != "onnxruntime":
            raise InputError(
                f"the GPU variant serves ONNX crates; this crate's runtime is "
                f"{manifest.runtime.kind}",
                hint="leave out --gpu (the CPU image serves it), or build the crate from ONNX",
            )
        locked = gpu_lock(lock, python=manifest.python.version, cache_dir=lock_cache)
        lock, changes = locked.data, locked.changes
        files["gpu/requirements.lock"] = lock
        files[f"gpu/{SBOM_FILE}"] = sbom_json(manifest, lock)
    say("copy the modelcrate runtime")
    for f in app_files(app_source or default_app_source()):
        if f.data is not None:
            files["app/" + f.path.removeprefix(APP_ROOT + "/")] = f.data
    lock_sha256 = hashlib.sha256(lock).hexdigest()
    files["Dockerfile"] = render_dockerfile(
        manifest, base=chosen, gpu=gpu, lock_sha256=lock_sha256, changes=changes
    ).encode()
    files[".dockerignore"] = _IGNORE.encode()
    files[MARKER] = (
        json.dumps({"crate": manifest.name, "version": manifest.version, "gpu": gpu}) + "\n"
    ).encode()
    say(f"write {out}")
    _write_tree(out, files)
    return DockerContext(
        path=out,
        name=manifest.name,
        version=manifest.version,
        base=chosen,
        gpu=gpu,
        python=f"python{manifest.python.version}",
        lock_sha256=lock_sha256,
        files=tuple(sorted(files)),
        changes=changes,
    )


def render_dockerfile(
    manifest: Manifest,
    *,
    base: str,
    gpu: bool = False,
    lock_sha256: str | None = None,
    changes: tuple[str, ...] = (),
) -> str:
    """The Dockerfile text (pure: the same inputs give the same bytes)."""
    from modelcrate import __version__
    from modelcrate.crate.layout import SIDE_FILES

    py = f"python{manifest.python.version}"
    lock_sha256 = lock_sha256 or manifest.lock_sha256
    tag = f"{manifest.name}:{manifest.short_version}"
    lock_dir = "gpu" if gpu else "crate"
    probe = (
        "import sys, urllib.request as u; "
        f"sys.exit(0 if u.urlopen('http://127.0.0.1:{PORT}/readyz', timeout=4).status == 200 "
        "else 1)"
    )
    labels = {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.created": manifest.created,
        "org.opencontainers.image.source": f"modelcrate {__version__}",
        "org.opencontainers.image.base.name": base,
        "io.modelcrate.crate.name": manifest.name,
        "io.modelcrate.crate.version": manifest.version,
        "io.modelcrate.lock.sha256": lock_sha256,
        "io.modelcrate.sbom": f"{ROOT}/{lock_dir}/sbom.cdx.json",
    }
    out = [
        "# syntax=docker/dockerfile:1",
        f"# Crate {manifest.name} {manifest.version}",
        f"#   {manifest.flavor} model, {manifest.runtime.kind} runtime, Python "
        f"{manifest.python.version}; written by modelcrate {__version__}.",
        "#",
        f"#   docker build -t {tag} .",
        f"#   docker run --rm -p {PORT}:{PORT} {tag}",
        "#   (podman build --format docker keeps the HEALTHCHECK; OCI images drop it)",
        "#",
        "# Behind a mirror or a TLS-intercepting proxy: --build-arg PIP_INDEX_URL=...,",
        "# --build-arg PIP_CERT=/path/ca.crt (mount the CA bundle into the build).",
    ]
    if gpu:
        out += [
            "#",
            "# GPU variant: an NVIDIA CUDA runtime base (run with --gpus all) and",
            f"# {lock_dir}/requirements.lock, the crate's lock with these changes:",
            *(f"#   {c}" for c in changes),
        ]
    out += ["", f"ARG BASE={base}", ""]
    if gpu:
        out += [
            f"# -- python: the CUDA runtime plus {py} from the distribution",
            "FROM ${BASE} AS python",
            "RUN apt-get update \\",
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"{py} \\",
            " && rm -rf /var/lib/apt/lists/*",
            "",
            "# -- builder: the locked wheels, hash-checked, binaries only, in one folder",
            "FROM python AS builder",
            "RUN apt-get update \\",
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"{py}-venv ca-certificates \\",
            " && rm -rf /var/lib/apt/lists/* \\",
            f" && {py} -m venv /opt/pip",
        ]
        pip = "/opt/pip/bin/python -m pip"
        final_from = "FROM python"
    else:
        out += [
            "# -- builder: the locked wheels, hash-checked, binaries only, in one folder",
            "FROM ${BASE} AS builder",
            _python_check(py, manifest.python.version),
        ]
        pip = f"{py} -m pip"
        final_from = "FROM ${BASE}"
    out += [
        "ARG PIP_INDEX_URL",
        "ARG PIP_CERT",
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore",
        f"COPY {lock_dir}/requirements.lock /tmp/requirements.lock",
        f"RUN {pip} install --no-cache-dir --require-hashes --only-binary=:all: --no-deps \\",
        f"        --target {ROOT}/site-packages -r /tmp/requirements.lock",
        "",
        "# -- the service: dependencies, model, crate files, runtime (least to most often changed)",
        final_from,
        f"ENV PYTHONPATH={ROOT}/app:{ROOT}/site-packages \\",
        "    PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    HOME=/tmp",
        f"COPY --from=builder {ROOT}/site-packages {ROOT}/site-packages",
        f"COPY crate/model {ROOT}/crate/model",
        f"COPY {' '.join(f'crate/{name}' for name in sorted(SIDE_FILES))} {ROOT}/crate/",
    ]
    if gpu:
        out.append(f"COPY gpu/ {ROOT}/gpu/")
    out += [
        f"COPY app/modelcrate {ROOT}/app/modelcrate",
        # metadata last: a new crate version must not invalidate the cached dependency layer
        "LABEL " + " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()),
        f"WORKDIR {ROOT}",
        f"USER {USER}",
        f"EXPOSE {PORT}",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        f"    CMD {json.dumps([py, '-c', probe])}",
        f"ENTRYPOINT {json.dumps([py, '-m', 'modelcrate', 'serve', f'{ROOT}/crate'])}",
        f"CMD {json.dumps(['--host', '0.0.0.0', '--port', str(PORT)])}",
    ]
    return "\n".join(out) + "\n"


def _python_check(py: str, version: str) -> str:
    """A builder step that fails with the cause and the fix when the base lacks the Python."""
    message = (
        f"this crate needs {py} with pip in the base image; pass --base with a Python "
        f"{version} image (e.g. python:{version}-slim)"
    )
    return f"RUN {py} -m pip --version >/dev/null || {{ echo {json.dumps(message)} >&2; exit 1; }}"


def _check_destination(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(
            "the destination exists and is not a folder",
            path=str(out),
            hint="pass a new folder (or one a previous 'modelcrate dockerfile' wrote)",
        )
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise InputError(
            "the destination folder is not empty and was not written by modelcrate",
            path=str(out),
            hint="pass a new or empty folder; modelcrate replaces only a context it wrote",
        )


def _write_tree(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a temp folder beside ``out``, then swap it into place."""
    epoch = source_date_epoch()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise _write_error(out, exc) from exc
    old: Path | None = None
    try:
        for rel, data in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(path, 0o644)
        for path in sorted(tmp.rglob("*"), reverse=True):  # children before their folders
            if path.is_dir():
                os.chmod(path, 0o755)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        os.chmod(tmp, 0o755)
        os.utime(tmp, (epoch, epoch))
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "context")
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "context", out)
        if isinstance(exc, OSError):
            raise _write_error(out, exc) from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_error(out: Path, exc: OSError) -> InputError:
    return InputError(
        f"cannot write the build context: {exc.strerror or exc}",
        path=str(out),
        hint="check free space and permissions of the destination's folder",
    )
