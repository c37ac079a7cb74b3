"""Plumbing for the end-to-end image tests and the image benchmark: no pytest in here.

* :func:`ensure_base_layout` -- a Debian bookworm base with Python, made offline by
  ``mmdebstrap`` and turned into an OCI layout by ``umoci``; built once and cached on disk under
  a folder keyed by the package list (``$MODELCRATE_TEST_CACHE`` or
  ``/var/tmp/modelcrate-test-base``), so every later session only copies it.
* :func:`tiny_layout` -- small OCI layouts from a few files (a base without Python, a base for
  another architecture), also made with ``umoci``.
* :class:`Podman` -- ``podman`` with the flags these machines need (``--runtime runc``, explicit
  ulimits) that remembers every container and image it made and removes them in ``cleanup``.
* :func:`build_iris_crate` -- a real crate (scan, convert, parity, lock) from a pickled
  scikit-learn model, the way a user builds one; :func:`snapshot_app` -- a copy of the modelcrate
  code to ship, so that builds compare while the checkout changes.
* registry checks by plain HTTP (:func:`manifest_digest`, :func:`registry_tags`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS: tuple[str, ...] = ("podman", "runc", "skopeo", "umoci", "docker-registry", "mmdebstrap")
BASE_SUITE = "bookworm"
BASE_VARIANT = "essential"
# python3-minimal + the standard library; libstdc++6 for the C++ wheels (onnxruntime);
# ca-certificates as a real slim base has them.
BASE_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "libpython3.11-stdlib",
    "libstdc++6",
    "python3-minimal",
)
# The same base without libstdc++6: what `mmdebstrap --variant=essential` with only Python
# gives; C++ extension modules cannot load there (issue 9, section 3).
BARE_BASE_PACKAGES: tuple[str, ...] = tuple(p for p in BASE_PACKAGES if p != "libstdc++6")
BASE_TAG = "bookworm"
BASE_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RECIPE = 1  # bump when the way the base is made changes (invalidates every cache)
PODMAN_GLOBAL = ("--runtime", "runc")
PODMAN_RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


class CommandFailed(RuntimeError):
    """An external command exited non-zero; the message holds its output."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, capture its output; raise :class:`CommandFailed` (with it) on failure."""
    proc = subprocess.run(  # noqa: PLW1510 -- checked below, with the output in the error
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- the Debian base


def cache_root() -> Path:
    env = os.environ.get("MODELCRATE_TEST_CACHE")
    return Path(env) if env else Path("/var/tmp/modelcrate-test-base")


def base_key(packages: Sequence[str] = BASE_PACKAGES) -> str:
    recipe = {
        "recipe": _RECIPE,
        "suite": BASE_SUITE,
        "variant": BASE_VARIANT,
        "packages": sorted(packages),
        "env": BASE_ENV,
    }
    doc = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(doc).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class BaseLayout:
    """A cached OCI layout holding the base under :data:`BASE_TAG`."""

    path: Path
    key: str
    built: bool  # made by this call (not found in the cache)
    seconds: float

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:{BASE_TAG}"


def ensure_base_layout(
    packages: Sequence[str] = BASE_PACKAGES,
    *,
    root: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BaseLayout:
    """The base as an OCI layout: from the cache, or made now (mmdebstrap, ~20-60 s)."""
    key = base_key(packages)
    home = (root or cache_root()) / key
    layout = home / "oci"
    start = time.monotonic()
    with _file_lock(home.parent / f"{key}.lock"):
        if (layout / "index.json").is_file():
            return BaseLayout(layout, key, False, time.monotonic() - start)
        if progress:
            progress(f"building the Debian base ({', '.join(packages)}) into {layout}")
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=home, prefix=".build-") as tmp:
            work = Path(tmp)
            rootfs = work / "rootfs.tar"
            env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
            run(
                [
                    "mmdebstrap",
                    "--quiet",
                    f"--variant={BASE_VARIANT}",
                    f"--include={','.join(packages)}",
                    "--format=tar",
                    BASE_SUITE,
                    str(rootfs),
                ],
                timeout=600,
                env=env,
            )
            staged = work / "oci"
            _layout_from_tar(staged, rootfs, arch="amd64", env=(BASE_ENV,))
            rootfs.unlink()
            staged.rename(layout)
    return BaseLayout(layout, key, True, time.monotonic() - start)


def _layout_from_tar(
    layout: Path, layer_tar: Path, *, arch: str, env: Sequence[str] = (), tag: str = BASE_TAG
) -> None:
    """An OCI layout with one layer (``layer_tar``) for linux/``arch``, tagged ``tag``."""
    image = f"{layout}:{tag}"
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", image])
    config = ["umoci", "config", "--image", image, "--architecture", arch, "--os", "linux"]
    for item in env:
        config += ["--config.env", item]
    run(config)
    run(["umoci", "raw", "add-layer", "--image", image, str(layer_tar)], timeout=300)
    run(["umoci", "gc", "--layout", str(layout)])


def tiny_layout(
    layout: Path, files: Mapping[str, bytes], *, arch: str = "amd64", tag: str = "latest"
) -> str:
    """An OCI layout whose only layer holds ``files`` (path -> bytes, 0755); returns its ref."""
    layout.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(files[name]), 0o755
            tar.addfile(info, io.BytesIO(files[name]))
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "layer.tar"
        layer.write_bytes(buf.getvalue())
        _layout_from_tar(layout, layer, arch=arch, env=(BASE_ENV,), tag=tag)
    return f"oci:{layout}:{tag}"


def skopeo_copy(src: str, dst: str, *, timeout: float = 300) -> None:
    """``skopeo copy`` over plain HTTP (the test registries listen on loopback only)."""
    run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst],
        timeout=timeout,
    )


def skopeo_inspect(ref: str) -> dict[str, Any]:
    """``skopeo inspect`` of an image in a plain-HTTP registry (Digest, Layers, ...)."""
    raw = run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], timeout=60)
    doc: dict[str, Any] = json.loads(raw.stdout)
    return doc


def manifest_digest(ref: str) -> tuple[str, dict[str, Any]]:
    """The digest of the manifest a registry serves for ``ref`` (sha256 of its bytes), and it."""
    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], timeout=60)
    data = raw.stdout.encode()
    doc: dict[str, Any] = json.loads(data)
    return "sha256:" + hashlib.sha256(data).hexdigest(), doc


def registry_get(url: str, path: str, *, auth: str | None = None) -> dict[str, Any] | None:
    """``GET URL/v2/PATH`` as JSON; None on 404 (the registry does not know it)."""
    request = urllib.request.Request(f"{url}/v2/{path}")
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            doc: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return doc


def registry_tags(url: str, repo: str, *, auth: str | None = None) -> list[str]:
    """The tags a registry holds for ``repo`` ([] when it has never heard of it)."""
    doc = registry_get(url, f"{repo}/tags/list", auth=auth)
    return list((doc or {}).get("tags") or [])


# --------------------------------------------------------------------------- podman


@dataclass
class Podman:
    """``podman`` with this machine's flags; removes what it made in :meth:`cleanup`."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *PODMAN_GLOBAL, *args], timeout=timeout, check=check)

    def pull(self, ref: str) -> str:
        """Pull ``ref`` over plain HTTP; returns the local image id."""
        self.images.append(ref)
        self("pull", "--quiet", "--tls-verify=false", ref, timeout=600)
        return self("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def run_detached(self, image: str, *, name: str, ports: Mapping[int, int]) -> str:
        """``podman run -d`` with the ulimits these machines allow; ``ports``: host -> 8080."""
        self.containers.append(name)
        cmd = ["run", "-d", "--name", name, *PODMAN_RUN_LIMITS]
        for host, inside in ports.items():
            cmd += ["-p", f"127.0.0.1:{host}:{inside}"]
        return self(*cmd, image).stdout.strip()

    def state(self, name: str) -> dict[str, Any]:
        out = self("inspect", "--format", "{{json .State}}", name).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def logs(self, name: str) -> str:
        proc = self("logs", name, check=False)
        return proc.stdout + proc.stderr

    def cleanup(self) -> list[str]:
        """Remove every container and image this object made; returns what failed."""
        problems: list[str] = []
        for name in reversed(self.containers):
            proc = self("rm", "--force", "--time", "0", name, check=False, timeout=60)
            if proc.returncode != 0 and "no such container" not in proc.stderr.lower():
                problems.append(f"container {name}: {proc.stderr.strip()}")
        for ref in reversed(self.images):
            proc = self("rmi", "--force", ref, check=False, timeout=120)
            if proc.returncode != 0 and "image not known" not in proc.stderr.lower():
                problems.append(f"image {ref}: {proc.stderr.strip()}")
        self.containers.clear()
        self.images.clear()
        return problems


# --------------------------------------------------------------------------- modelcrate


@dataclass(frozen=True)
class AppSource:
    """A copy of the modelcrate package: builds that ship it ship the same code even while the
    checkout changes (several people edit it at once)."""

    root: Path  # first on PYTHONPATH, ``import modelcrate`` loads the copy

    @property
    def package(self) -> Path:
        return self.root / "modelcrate"


def snapshot_app(root: Path, *, edit: str | None = None) -> AppSource:
    """Copy the installed modelcrate package under ``root``; ``edit`` appends that comment to
    ``serve/app.py`` (a code-only change)."""
    import modelcrate

    app = AppSource(root)
    shutil.copytree(
        Path(modelcrate.__file__).parent, app.package, ignore=shutil.ignore_patterns("__pycache__")
    )
    if edit is not None:
        module = app.package / "serve" / "app.py"
        module.write_text(module.read_text() + f"\n# {edit}\n")
    return app


def modelcrate_cli(
    *args: str, app: AppSource | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m modelcrate ARGS`` as a user runs it (``app``: with that copy of the code)."""
    first = str(app.root) if app is not None else ""
    path = os.pathsep.join(p for p in (first, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "modelcrate", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {}), "PYTHONPATH": path},
        check=False,
    )


# --------------------------------------------------------------------------- a real crate


@dataclass(frozen=True)
class IrisCrate:
    """A crate built by ``modelcrate.crate.build`` and the estimator it was made from."""

    store_root: Path
    ref: str  # "iris:<short version>"
    name: str
    crate_dir: Path
    model: Any  # scikit-learn LogisticRegression, fitted on a DataFrame
    frame: Any  # pandas DataFrame (float32), the training rows


def build_iris_crate(root: Path, *, name: str = "iris") -> IrisCrate:
    """Pickle a LogisticRegression fitted on iris and build it into a store under ``root``."""
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from modelcrate.crate.build import build
    from modelcrate.crate.store import Store

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=list(IRIS_FEATURES)).astype("float32")
    labels = [IRIS_CLASSES[i] for i in data.target]
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    root.mkdir(parents=True, exist_ok=True)
    source = root / f"{name}.pkl"
    source.write_bytes(pickle.dumps(model))
    store = Store(root / "store")
    built = build(source, name=name, store=store)
    return IrisCrate(root / "store", built.ref, name, built.path, model, frame)


def containerize_crate(crate: IrisCrate, app: AppSource | None = None, **kwargs: Any) -> Any:
    """:func:`modelcrate.image.containerize.containerize` of ``crate`` from its store
    (``app``: ship that copy of the code)."""
    from modelcrate.image.containerize import containerize

    if app is not None:
        kwargs["app_source"] = app.package
    return containerize(crate.ref, store=crate.store_root, **kwargs)


def wait_ready(
    url: str, *, timeout: float, alive: Callable[[], str | None] | None = None
) -> dict[str, Any]:
    """Poll ``url`` + ``/readyz`` until 200; ``alive`` returns a reason to stop early."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and (reason := alive()) is not None:
            raise RuntimeError(f"not ready: {reason}")
        try:
            answer = httpx.get(url + "/readyz", timeout=2)
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
            last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url}/readyz not ready within {timeout:.0f} s (last: {last})")
