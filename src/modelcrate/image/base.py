"""The base image: where it comes from, its platform, and the Python inside it.

A base is named like ``skopeo`` names images:

- ``oci:DIR[:TAG]`` an OCI image layout folder,
- ``oci-archive:FILE[:TAG]`` a tar of one (what ``podman save --format oci-archive`` writes),
- ``[REGISTRY/]REPO[:TAG|@DIGEST]`` an image in a registry, pulled through the distribution API
  (no registry: Docker Hub, ``python:3.11-slim`` is ``docker.io/library/python:3.11-slim``).

The interpreter is found by reading the layers (:mod:`modelcrate.image.rootfs`): no container is
run. So are the shared libraries the base provides (every name in the folders the dynamic loader
searches: ``LD_LIBRARY_PATH`` of the image config, ``/etc/ld.so.conf`` and its includes, the
multiarch and default folders), which :mod:`modelcrate.image.elfdeps` checks the wheels against.
Both depend only on the image, so they are cached under the image digest
(``<cache>/base-<hex>.json``); a warm build reads the layers' bytes but does not unpack them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError
from modelcrate.image.rootfs import Interpreter, read_rootfs

if TYPE_CHECKING:
    from modelcrate.image.oci import Image, Platform

DEFAULT_BASE: Final = "python:3.11-slim"
DOCKER_HUB: Final = "registry-1.docker.io"
_HUB_NAMES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CACHE_FORMAT: Final = 3
# Debian's multiarch triplet (the /usr/lib/<triplet> library folder) of each architecture.
TRIPLETS: Final = {
    "amd64": "x86_64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "arm": "arm-linux-gnueabihf",
    "386": "i386-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
}


@dataclass(frozen=True)
class ImageRef:
    """A parsed image name: a local layout/archive or a registry repository."""

    transport: Literal["oci", "oci-archive", "registry"]
    location: str  # folder or file for layouts, the registry host[:port] otherwise
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        """What the registry or layout is asked for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        if self.transport != "registry":
            return f"{self.transport}:{self.location}" + (f":{self.tag}" if self.tag else "")
        host = "docker.io" if self.location == DOCKER_HUB else self.location
        name = f"{host}/{self.repository}"
        return (
            name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        )


@dataclass(frozen=True)
class BaseImage:
    """A resolved base image, checked for platform and Python."""

    ref: ImageRef
    image: Image
    platform: Platform
    python: Interpreter
    libraries: frozenset[str] = frozenset()  # file names in the loader's search folders
    library_dirs: tuple[str, ...] = ()  # those folders, in search order

    @property
    def name(self) -> str:
        return str(self.ref)

    @property
    def digest(self) -> str:
        return self.image.digest


def parse_image_ref(text: str, *, default_tag: str | None = "latest") -> ImageRef:
    """``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]`` or ``[REGISTRY/]REPO[:TAG|@DIGEST]``."""
    text = text.strip()
    for transport in ("oci-archive", "oci"):
        if text.startswith(transport + ":"):
            path, tag = _split_path_tag(text[len(transport) + 1 :], text)
            kind: Literal["oci", "oci-archive"] = "oci" if transport == "oci" else "oci-archive"
            return ImageRef(kind, path, tag=tag)
    return parse_registry_ref(text, default_tag=default_tag)


def parse_registry_ref(text: str, *, default_tag: str | None = "latest") -> ImageRef:
    """``[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` with Docker's rules: the first part is a host when
    it has a ``.`` or ``:`` or is ``localhost``; a one-part Docker Hub name is ``library/NAME``."""
    name, _, digest = text.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, name
    repo, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = path.rpartition(":")
    if host in _HUB_NAMES:
        host = DOCKER_HUB
        if "/" not in repo:
            repo = f"library/{repo}"
    problem = None
    if not repo or not _REPO_RE.match(repo):
        problem = f"repository {repo!r} is not a valid name (lowercase letters, digits, . _ - /)"
    elif tag is not None and not _TAG_RE.match(tag):
        problem = f"tag {tag!r} is not valid"
    elif digest and not _DIGEST_RE.match(digest):
        problem = f"digest {digest!r} is not sha256: and 64 hex digits"
    if problem is not None:
        raise InputError(
            f"cannot read the image name {text!r}: {problem}",
            hint="write it as [REGISTRY/]REPO[:TAG] or REPO@sha256:..., e.g. "
            "127.0.0.1:5000/models/iris:v1",
        )
    if tag is None and not digest:
        tag = default_tag
    return ImageRef("registry", host, repo, tag, digest or None)


def _split_path_tag(spec: str, text: str) -> tuple[str, str | None]:
    """``PATH[:TAG]`` as skopeo splits it: the whole spec when that path exists, else at the
    first colon (so a tag may be a full name: ``oci-archive:img.tar:models/iris:v1``)."""
    if not spec:
        raise InputError(f"image name {text!r} names no path", hint="write oci:DIR or oci:DIR:TAG")
    if Path(spec).exists() or ":" not in spec:
        return spec, None
    path, _, tag = spec.partition(":")
    if not path or not tag:
        raise InputError(f"image name {text!r} has an empty path or tag", hint="write oci:DIR:TAG")
    return path, tag


def load_image(
    ref: ImageRef,
    *,
    platform: Platform,
    insecure: bool = False,
    cache_dir: Path | None = None,
    env_hosts: Sequence[str] = (),
) -> Image:
    """The image ``ref`` names, for ``platform`` where it is a multi-platform index.
    ``env_hosts``: the registries the ``MODELCRATE_REGISTRY_*`` credentials are for (see
    :mod:`modelcrate.image.auth`)."""
    if ref.transport == "oci":
        from modelcrate.image.layout import read_oci_layout

        return read_oci_layout(Path(ref.location), ref.tag, platform=str(platform))
    if ref.transport == "oci-archive":
        from modelcrate.image.layout import read_oci_archive

        return read_oci_archive(Path(ref.location), ref.tag, platform=str(platform))
    from modelcrate.image.registry import RegistryClient

    assert ref.repository is not None
    assert ref.reference is not None
    client = RegistryClient(ref.location, insecure=insecure, env_hosts=env_hosts)
    blob_cache = None if cache_dir is None else cache_dir / "blobs"
    return client.pull_image(
        ref.repository, ref.reference, platform=platform, blob_cache=blob_cache
    )


def resolve_base(
    ref: str,
    *,
    platform: str = "linux/amd64",
    insecure: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    env_hosts: Sequence[str] = (),
) -> BaseImage:
    """Load the base ``ref``, check its platform and find its Python (see the module doc)."""
    from modelcrate.image.oci import Platform

    wanted = Platform.parse(platform)
    parsed = parse_image_ref(ref)
    image = load_image(
        parsed, platform=wanted, insecure=insecure, cache_dir=cache_dir, env_hosts=env_hosts
    )
    config = image.config
    got = Platform(
        str(config.get("os", "")),
        str(config.get("architecture", "")),
        config.get("variant") if isinstance(config.get("variant"), str) else None,
    )
    if not got.matches(wanted):
        raise InputError(
            f"the base image {parsed} is built for {got}, not for {wanted}",
            hint=f"use a base image for {wanted}, or pass --platform {got} if the crate's "
            "dependencies exist for it",
        )
    if progress is not None:
        progress("python")
    python, libraries, dirs = _inspect(image, str(parsed), got, cache_dir)
    return BaseImage(parsed, image, got, python, frozenset(libraries), tuple(dirs))


def check_python_version(base: BaseImage, wanted: str, *, crate: str) -> None:
    """A crate locked for Python ``wanted`` needs exactly that minor version in the base."""
    if base.python.version != wanted:
        raise InputError(
            f"crate {crate} needs Python {wanted}, but the base image {base.name} has Python "
            f"{base.python.version} ({base.python.path})",
            hint=f"use a base with Python {wanted} (e.g. --base python:{wanted}-slim), or rebuild "
            f"the crate with --python {base.python.version}",
        )


def ld_library_path(image: Image) -> list[str]:
    """The folders of ``LD_LIBRARY_PATH`` in the image config's environment."""
    env = image.config.get("config", {}).get("Env") or []
    for item in env:
        if isinstance(item, str) and item.startswith("LD_LIBRARY_PATH="):
            return [d for d in item.partition("=")[2].split(":") if d]
    return []


def _inspect(
    image: Image, name: str, platform: Platform, cache_dir: Path | None
) -> tuple[Interpreter, list[str], list[str]]:
    """The base's Python (checked), and the libraries and library folders it provides."""
    cache = None if cache_dir is None else cache_dir / f"base-{image.digest.split(':')[-1]}.json"
    cached = _read_cache(cache) if cache is not None else None
    if cached is not None:
        found, missing, musl, libraries, dirs = cached
    else:
        fs = read_rootfs(((layer.blob, layer.diff_id) for layer in image.layers), where=name)
        found = fs.find_python()
        missing = fs.missing_stdlib(found) if found is not None else []
        musl = fs.is_musl()
        triplet = TRIPLETS.get(platform.architecture, f"{platform.architecture}-linux-gnu")
        dirs = fs.library_dirs(triplet, ld_library_path(image))
        libraries = sorted(fs.library_names(dirs))
        if cache is not None:
            _write_cache(
                cache, found=found, missing=missing, musl=musl, libraries=libraries, dirs=dirs
            )
    if found is None:
        raise InputError(
            f"the base image {name} has no Python interpreter (looked for python3 and python3.N "
            "in /usr/local/bin and /usr/bin)",
            hint="use a base with CPython, e.g. python:3.11-slim, or a Debian base with the "
            "python3-minimal and libpython3.11-stdlib packages",
        )
    if musl:
        raise InputError(
            f"the base image {name} uses musl libc (Alpine): the crate's manylinux wheels "
            "need glibc",
            hint=f"use a glibc base, e.g. python:{found.version}-slim (Debian)",
        )
    if missing:
        raise InputError(
            f"the Python {found.version} in the base image {name} ({found.path}) lacks standard "
            f"library modules that modelcrate serve needs: {', '.join(missing)}",
            hint=f"use a base with the full standard library (Debian: add libpython{found.version}"
            f"-stdlib), e.g. python:{found.version}-slim",
        )
    return found, libraries, dirs


_Cached = tuple[Interpreter | None, list[str], bool, list[str], list[str]]


def _read_cache(path: Path) -> _Cached | None:
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != _CACHE_FORMAT:
            return None
        py = doc["python"]
        found = None if py is None else Interpreter(**py)
        return (
            found,
            [str(m) for m in doc["missing"]],
            bool(doc["musl"]),
            [str(n) for n in doc["libraries"]],
            [str(d) for d in doc["library_dirs"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(
    path: Path,
    *,
    found: Interpreter | None,
    missing: list[str],
    musl: bool,
    libraries: list[str],
    dirs: list[str],
) -> None:
    doc = {
        "format": _CACHE_FORMAT,
        "python": asdict(found) if found else None,
        "missing": missing,
        "musl": musl,
        "libraries": libraries,
        "library_dirs": dirs,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(doc, sort_keys=True).encode())
    except OSError:
        return  # only the next build is slower
