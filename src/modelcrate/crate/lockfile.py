"""``requirements.lock``: the crate's runtime dependencies, fully pinned, with hashes.

Only what ``modelcrate serve`` imports is locked (the runtime, NumPy, FastAPI, Uvicorn, Pydantic,
...), never the training stack. The direct requirements are pinned to the versions installed here
and every installed dependency of theirs is passed as a constraint, so the lock matches the
environment the crate was built and tested in. ``uv pip compile --generate-hashes`` resolves it
for the crate's Python on linux x86_64.

Resolving needs the package index, so the result is cached in the store under the digest of the
request (:meth:`LockRequest.key`): building the same inputs again never calls uv and gives the same
bytes. Resolution here never writes the cache; the store does, when the crate is committed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from modelcrate.crate.canonical import canonical_json
from modelcrate.errors import InputError

UV_PLATFORM = "x86_64-manylinux_2_28"
LOCK_NAME = "requirements.lock"
UV_TIMEOUT_S = 300.0

# What `modelcrate serve` imports, whatever the runtime.
SERVE_PACKAGES: tuple[str, ...] = (
    "numpy",
    "fastapi",
    "uvicorn[standard]",
    "pydantic",
    "orjson",
    "pyyaml",
    "prometheus-client",
    "typer",
    "click",
    "rich",
)
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "skops": ("skops", "scikit-learn", "pandas"),  # the skops runtime feeds DataFrames
}
_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER_RE = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_PY_RE = re.compile(r"^3\.\d{1,2}$")
_NETWORK_HINTS = (
    "failed to fetch",
    "error sending request",
    "dns error",
    "connection",
    "timed out",
    "network",
    "offline",
)


@dataclass(frozen=True)
class LockRequest:
    """What to resolve: direct requirements, constraints, target Python and platform."""

    requirements: tuple[str, ...]
    constraints: tuple[str, ...]
    python: str
    platform: str = UV_PLATFORM

    def key(self) -> str:
        """The cache key: sha256 of the canonical request."""
        doc = {
            "requirements": list(self.requirements),
            "constraints": list(self.constraints),
            "python": self.python,
            "platform": self.platform,
        }
        return hashlib.sha256(canonical_json(doc)).hexdigest()


@dataclass(frozen=True)
class Lock:
    """A resolved lock: its bytes, the request key it answers, and whether it came from cache."""

    data: bytes
    key: str
    cached: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def check_python(python: str) -> str:
    if not _PY_RE.match(python):
        raise InputError(
            f"unsupported Python version {python!r}",
            hint="pass --python as MAJOR.MINOR, e.g. --python 3.11",
        )
    return python


def lock_request(runtime: str, python: str) -> LockRequest:
    """The request for ``runtime`` (a manifest ``runtime.kind``), pinned to installed versions."""
    check_python(python)
    if runtime not in RUNTIME_PACKAGES:
        raise InputError(f"no runtime dependency set for runtime {runtime!r}")
    direct = [*SERVE_PACKAGES, *RUNTIME_PACKAGES[runtime]]
    pinned = []
    for req in direct:
        name, extras = _parse(req)
        version = _installed(name)
        spec = f"{name}[{','.join(sorted(extras))}]" if extras else name
        pinned.append(f"{spec}=={version}" if version else spec)
    direct_names = {_canon(_parse(r)[0]) for r in direct}
    constraints = sorted(
        f"{name}=={version}"
        for name, version in _closure(direct).items()
        if name not in direct_names and version
    )
    return LockRequest(tuple(sorted(pinned)), tuple(constraints), python)


def resolve_lock(request: LockRequest, *, cache_dir: Path | None) -> Lock:
    """The cached lock for ``request`` if ``cache_dir`` holds one, else resolve it with uv."""
    key = request.key()
    if cache_dir is not None:
        cached = cache_dir / f"{key}.lock"
        try:
            return Lock(cached.read_bytes(), key, cached=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(
                f"cannot read the cached lock: {exc.strerror or exc}",
                path=str(cached),
                hint="check the store's permissions, or delete the file to resolve again",
            ) from exc
    body = _compile(request)
    return Lock(_header(request) + body, key, cached=False)


def _header(request: LockRequest) -> bytes:
    return (
        "# requirements.lock: the runtime dependencies of a modelcrate crate (serving only).\n"
        f"# Python {request.python}, {request.platform}; resolved by uv with hashes.\n"
        "# Install: pip install --require-hashes --no-deps -r requirements.lock\n"
    ).encode()


def _compile(request: LockRequest) -> bytes:
    uv = _uv_command()
    with tempfile.TemporaryDirectory(prefix="modelcrate-lock-") as tmp:
        Path(tmp, "requirements.in").write_text("\n".join(request.requirements) + "\n")
        Path(tmp, "constraints.txt").write_text("\n".join(request.constraints) + "\n")
        cmd = [
            *uv,
            "pip",
            "compile",
            "requirements.in",
            "--constraint",
            "constraints.txt",
            "--generate-hashes",
            "--python-version",
            request.python,
            "--python-platform",
            request.platform,
            "--no-header",
            "--quiet",
        ]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, capture_output=True, timeout=UV_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InputError(
                f"locking the runtime dependencies took longer than {UV_TIMEOUT_S:.0f} s",
                hint="check the network or the package index (UV_INDEX_URL), then build again",
            ) from exc
    if proc.returncode != 0:
        raise _uv_error(proc.stderr.decode("utf-8", "replace"), request)
    return proc.stdout


def _uv_error(stderr: str, request: LockRequest) -> InputError:
    detail = " ".join(line.strip() for line in stderr.strip().splitlines()[-6:])[:600]
    if any(word in stderr.lower() for word in _NETWORK_HINTS):
        return InputError(
            f"cannot lock the runtime dependencies: the package index is unreachable ({detail})",
            path=LOCK_NAME,
            hint="connect to the network or point UV_INDEX_URL at a reachable mirror; a lock "
            "resolved once is cached in the store, so later builds of the same inputs work offline",
        )
    return InputError(
        f"cannot lock the runtime dependencies for Python {request.python}: {detail}",
        path=LOCK_NAME,
        hint="the locally installed versions may not exist for that Python; pass the Python "
        "version of this environment with --python, or upgrade the packages named above",
    )


def _uv_command() -> list[str]:
    local = Path(sys.executable).parent / "uv"
    if local.is_file():
        return [str(local)]
    found = shutil.which("uv")
    if found:
        return [found]
    try:
        import uv  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "uv is needed to lock the runtime dependencies but is not installed",
            hint="pip install 'modelcrate[build]' (or pip install uv)",
        ) from exc
    return [sys.executable, "-m", "uv"]


def _parse(req: str) -> tuple[str, set[str]]:
    m = _REQ_RE.match(req)
    if m is None:
        return req.strip(), set()
    extras = {e.strip().lower() for e in (m.group(2) or "").split(",") if e.strip()}
    return m.group(1), extras


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(name: str) -> str | None:
    """The installed version, unless absent or a local build PyPI cannot have (``+local``)."""
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
    return None if "+" in version else version


def _closure(direct: list[str]) -> dict[str, str | None]:
    """Every installed distribution the direct requirements pull in, with its version."""
    seen: dict[str, str | None] = {}
    todo = [_parse(r) for r in direct]
    visited: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        canon = _canon(name)
        if (canon, frozenset(extras)) in visited:
            continue
        visited.add((canon, frozenset(extras)))
        seen[canon] = _installed(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req, _, marker = spec.partition(";")
            wanted = _EXTRA_MARKER_RE.findall(marker)
            if wanted and not extras.intersection(w.lower() for w in wanted):
                continue
            todo.append(_parse(req))
    return seen
