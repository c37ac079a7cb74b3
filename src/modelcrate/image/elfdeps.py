"""Shared libraries: does the base provide every one the wheels' native code links?

An image whose extension module links ``libstdc++.so.6`` builds and pushes fine on a base that
lacks it, then dies at start (``ImportError: libstdc++.so.6: cannot open shared object file``).
This module finds that at build time, from bytes only (nothing is loaded or run):

1. :func:`scan_layer` reads every shared object in the wheels layer (``*.so`` and ``*.so.N``
   files that start with the ELF magic) with :mod:`modelcrate.image.elf`: its ``DT_NEEDED``
   names, its ``DT_SONAME``, and which distribution installed it (the wheels' ``RECORD`` files).
   The result depends only on the layer, so it is cached under the layer digest.
2. :func:`check_libraries` takes away what the wheels bundle (auditwheel's ``<pkg>.libs/``
   folders, or any library elsewhere in the wheel set, matched by file name or SONAME) and
   looks the rest up in the base: the file names found in the folders the base's loader searches
   (:class:`modelcrate.image.base.BaseImage` ``libraries``). Anything left is refused, with the
   library, the wheel and module that need it, and the package to add.

Libraries the container runtime injects from the host (the NVIDIA driver's ``libcuda.so.1``,
``libnvidia-ml.so.1``, ...) are never in a base: they are reported, not refused. Shared objects
for another machine or ELF class than the image's, and files named ``.so`` that
are not readable ELF, are not checked; they are listed in the report. What a library of the
*base* itself links is the base's package manager's business and is not followed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError
from modelcrate.image.elf import EM_AARCH64, EM_X86_64, ElfError, ElfInfo, is_elf, read_elf

if TYPE_CHECKING:
    from modelcrate.image.base import BaseImage
    from modelcrate.image.tarlayer import Layer

FORMAT: Final = 1  # bump when what a scan records changes (invalidates the cache)
# The ELF machine and class each image platform runs.
PLATFORM_MACHINES: Final = {"linux/amd64": (EM_X86_64, 64), "linux/arm64": (EM_AARCH64, 64)}
MAX_SO_BYTES: Final = 4 << 30
_SO_NAME = re.compile(r"\.so(?:\.\d+)*$")
# The Debian/Ubuntu package of common libraries the manylinux policy lets wheels link.
DEBIAN_PACKAGES: Final = {
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
    "libgomp.so.1": "libgomp1",
    "libgfortran.so.5": "libgfortran5",
    "libquadmath.so.0": "libquadmath0",
    "libatomic.so.1": "libatomic1",
    "libz.so.1": "zlib1g",
    "libexpat.so.1": "libexpat1",
    "libffi.so.8": "libffi8",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libcrypt.so.1": "libcrypt1",
    "libnsl.so.2": "libnsl2",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libICE.so.6": "libice6",
    "libSM.so.6": "libsm6",
    "libxcb.so.1": "libxcb1",
}
# Injected at run time by the NVIDIA container toolkit from the host's driver, never in a base.
RUNTIME_PROVIDED: Final = frozenset(
    {"libcuda.so.1", "libnvidia-ml.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1",
     "libnvidia-opticalflow.so.1"}
)  # fmt: skip
_GLIBC = frozenset(
    {"libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libutil.so.1",
     "libresolv.so.2", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
)  # fmt: skip


@dataclass(frozen=True)
class SharedObject:
    """One shared object of the wheels layer, for the image's platform."""

    path: str  # in the image
    distribution: str  # "numpy 2.0.0" (from its RECORD), or "" when no RECORD lists it
    needed: tuple[str, ...]
    soname: str | None


@dataclass(frozen=True)
class LayerScan:
    """Every shared object of a wheels layer, and the ones that could not be checked."""

    objects: tuple[SharedObject, ...]
    foreign: tuple[tuple[str, str], ...]  # (path, "ELF 32-bit LSB i386"): another platform
    unreadable: tuple[tuple[str, str], ...]  # (path, why): named .so, not readable as ELF


@dataclass(frozen=True)
class MissingLibrary:
    name: str  # the DT_NEEDED name, e.g. libstdc++.so.6
    needed_by: tuple[SharedObject, ...]


@dataclass(frozen=True)
class LibraryReport:
    """What the check found: the libraries taken from the base, those the wheels bundle."""

    checked: int  # shared objects whose needs were checked
    from_base: tuple[str, ...]  # DT_NEEDED names the base provides, sorted
    bundled: tuple[str, ...]  # DT_NEEDED names the wheels provide themselves, sorted
    from_runtime: tuple[str, ...]  # DT_NEEDED names the container runtime injects (GPU driver)
    foreign: tuple[tuple[str, str], ...]
    unreadable: tuple[tuple[str, str], ...]


def scan_layer(
    layer: Layer, *, platform: str = "linux/amd64", cache_dir: Path | None = None
) -> LayerScan:
    """The shared objects of the wheels ``layer`` (cached under its digest in ``cache_dir``)."""
    machine, bits = PLATFORM_MACHINES.get(platform, (EM_X86_64, 64))
    hexdigest = layer.digest.split(":")[-1]
    cache = None if cache_dir is None else cache_dir / f"elfdeps-{hexdigest}-{machine}.json"
    if cache is not None and (hit := _read_cache(cache)) is not None:
        return hit
    objects: list[tuple[str, ElfInfo]] = []
    foreign: list[tuple[str, str]] = []
    unreadable: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for path, data in _layer_files(layer.blob):
        name = posixpath.basename(path)
        if data is None:
            unreadable.append((path, f"larger than {MAX_SO_BYTES >> 30} GiB, not read"))
            continue
        if name == "RECORD" and posixpath.dirname(path).endswith(".dist-info"):
            owners.update(_record_owners(path, data))
            continue
        if not is_elf(data):
            unreadable.append((path, "not an ELF file"))
            continue
        try:
            info = read_elf(data)
        except ElfError as exc:
            unreadable.append((path, str(exc)))
            continue
        if (info.machine, info.bits, info.little_endian) != (machine, bits, True):
            foreign.append((path, info.kind))
            continue
        objects.append((path, info))
    scan = LayerScan(
        objects=tuple(
            SharedObject(path, owners.get(path, ""), info.needed, info.soname)
            for path, info in objects
        ),
        foreign=tuple(foreign),
        unreadable=tuple(unreadable),
    )
    if cache is not None:
        _write_cache(cache, scan)
    return scan


def missing_libraries(scan: LayerScan, base_libraries: frozenset[str]) -> list[MissingLibrary]:
    """The libraries the scanned objects need that neither the wheels nor the base provide."""
    bundled = _bundled(scan)
    wanted: dict[str, list[SharedObject]] = {}
    for obj in scan.objects:
        for name in obj.needed:
            if "/" in name or name in bundled or name in base_libraries:
                continue  # a path ("/..." or "./..."): the loader takes it as written
            if name in RUNTIME_PROVIDED:
                continue
            wanted.setdefault(name, []).append(obj)
    return [MissingLibrary(name, tuple(objs)) for name, objs in sorted(wanted.items())]


def check_libraries(scan: LayerScan, base: BaseImage, *, crate: str) -> LibraryReport:
    """Refuse (InputError) when the base lacks a library the wheels need; else what was found."""
    missing = missing_libraries(scan, base.libraries)
    if missing:
        raise _missing_error(missing, base, crate)
    bundled = _bundled(scan)
    needed = {name for obj in scan.objects for name in obj.needed if "/" not in name}
    return LibraryReport(
        checked=len(scan.objects),
        from_base=tuple(sorted(n for n in needed if n not in bundled and n in base.libraries)),
        bundled=tuple(sorted(n for n in needed if n in bundled)),
        from_runtime=tuple(
            sorted(n for n in needed if n in RUNTIME_PROVIDED and n not in bundled | base.libraries)
        ),
        foreign=scan.foreign,
        unreadable=scan.unreadable,
    )


def debian_package(library: str) -> str | None:
    return DEBIAN_PACKAGES.get(library) or ("libc6" if library in _GLIBC else None)


# -- internals -----------------------------------------------------------------------------------


def _bundled(scan: LayerScan) -> set[str]:
    names = {posixpath.basename(obj.path) for obj in scan.objects}
    names.update(obj.soname for obj in scan.objects if obj.soname)
    return names


def _missing_error(missing: list[MissingLibrary], base: BaseImage, crate: str) -> InputError:
    parts = [f"{lib.name} (needed by {_users(lib.needed_by)})" for lib in missing]
    names = ", ".join(lib.name for lib in missing)
    packages = sorted({p for lib in missing if (p := debian_package(lib.name))})
    unknown = [lib.name for lib in missing if debian_package(lib.name) is None]
    fixes = []
    if packages:
        fixes.append(
            f"add {', '.join(packages)} to the base (Debian/Ubuntu packages: apt-get install "
            f"{' '.join(packages)}, or mmdebstrap --include={','.join(packages)})"
        )
    if unknown:
        fixes.append(
            f"add the package that provides {', '.join(unknown)} to the base (Debian: "
            f"apt-file search {unknown[0]})"
        )
    python = base.python.version
    fixes.append(f"or use a base that has them, e.g. python:{python}-slim")
    searched = ", ".join(base.library_dirs) or "(none)"
    return InputError(
        f"the base image {base.name} lacks shared libraries that crate {crate}'s wheels need: "
        f"{'; '.join(parts)}. The image would build, then fail at start with "
        f"'{missing[0].name}: cannot open shared object file' (searched: {searched})",
        hint="; ".join(fixes) + f" (missing: {names})",
    )


def _users(objects: tuple[SharedObject, ...]) -> str:
    """``numpy 2.0.0: numpy/_core/x.so and 2 more; onnxruntime 1.20.0: ...``, one per wheel."""
    from modelcrate.image.wheels import SITE_PACKAGES

    by_wheel: dict[str, list[str]] = {}
    for obj in objects:
        by_wheel.setdefault(obj.distribution, []).append(obj.path.removeprefix(SITE_PACKAGES + "/"))
    out = []
    for wheel, modules in sorted(by_wheel.items()):
        more = f" and {len(modules) - 1} more" if len(modules) > 1 else ""
        out.append(f"{wheel}: {modules[0]}{more}" if wheel else f"{modules[0]}{more}")
    return "; ".join(out)


def _layer_files(blob: bytes) -> Iterator[tuple[str, bytes | None]]:
    """``(path in the image, bytes)`` of each shared object and each RECORD in a layer blob
    (``None`` for a file too large to read whole)."""
    raw: IO[bytes] = io.BytesIO(blob)
    if blob[:2] == b"\x1f\x8b":
        raw = cast("IO[bytes]", gzip.GzipFile(fileobj=raw))
    try:
        with tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                name = posixpath.basename(info.name)
                if not info.isreg() or not (_SO_NAME.search(name) or name == "RECORD"):
                    continue
                path = "/" + posixpath.normpath(info.name).lstrip("/")
                fh = tar.extractfile(info) if info.size <= MAX_SO_BYTES else None
                yield path, None if fh is None else fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(
            f"the wheels layer is not a readable tar archive: {exc}",
            hint="delete the store's image-cache folder and build again",
        ) from exc


def _record_owners(record_path: str, data: bytes) -> dict[str, str]:
    """Image path -> "name version" for each file a dist-info RECORD lists."""
    folder = posixpath.dirname(record_path)  # .../site-packages/name-1.0.dist-info
    site = posixpath.dirname(folder)
    dist = posixpath.basename(folder).removesuffix(".dist-info")
    name, _, version = dist.partition("-")
    label = f"{name} {version}".strip()
    out = {}
    text = data.decode("utf-8", "replace")
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] and not row[0].startswith(("/", "../")):
            out[posixpath.normpath(posixpath.join(site, row[0]))] = label
    return out


def _read_cache(path: Path) -> LayerScan | None:
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            return None
        return LayerScan(
            objects=tuple(
                SharedObject(
                    str(o["path"]),
                    str(o["distribution"]),
                    tuple(str(n) for n in o["needed"]),
                    None if o["soname"] is None else str(o["soname"]),
                )
                for o in doc["objects"]
            ),
            foreign=tuple((str(p), str(k)) for p, k in doc["foreign"]),
            unreadable=tuple((str(p), str(w)) for p, w in doc["unreadable"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, scan: LayerScan) -> None:
    doc = {
        "format": FORMAT,
        "objects": [asdict(o) for o in scan.objects],
        "foreign": [list(x) for x in scan.foreign],
        "unreadable": [list(x) for x in scan.unreadable],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(doc, sort_keys=True).encode())
    except OSError:
        return  # only the next build is slower
