"""Small synthetic bases, wheels and crates for the assembly tests (no network, no podman).

A synthetic base is an OCI layout whose layers hold just what the interpreter search looks at:
an executable ``python3.N`` (a shell script, never run), the usual symlinks and the standard
library folders ``modelcrate serve`` needs. Wheels are real wheel files (zips with dist-info)
written here and installed by the real pip from a local folder; crates are real crates in a
real store, whose lock pins those wheels with their sha256.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

from modelcrate.crate.canonical import MANIFEST_NAME
from modelcrate.crate.layout import LOCK_FILE, SCAN_FILE, SIGNATURE_FILE, signature_json
from modelcrate.crate.store import Store, write_file
from modelcrate.image.oci import HistoryEntry, ImageConfig, build_image
from modelcrate.image.rootfs import STDLIB_NEEDED
from modelcrate.image.tarlayer import LayerFile, build_layer
from tests.crate.helpers import manifest_for
from tests.image.elfgen import shared_object

ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def python_files(
    prefix: str = "/usr", version: str = "3.11", *, stdlib: Sequence[str] = STDLIB_NEEDED
) -> list[LayerFile]:
    """A fake CPython under ``prefix``: bin/python3 -> python3.N, and its standard library."""
    lib = f"{prefix}/lib/python{version}"
    files = [
        LayerFile(f"{prefix}/bin/python{version}", b"#!/bin/sh\nexit 99\n", 0o755),
        LayerFile(f"{prefix}/bin/python3", None, link=f"python{version}"),
        LayerFile(f"{lib}/os.py", b"# os\n"),
    ]
    for part in stdlib:
        if part.endswith(".py"):
            files.append(LayerFile(f"{lib}/{part}", b"# module\n"))
        else:
            files.append(LayerFile(f"{lib}/{part}/__init__.py", b"# package\n"))
    return files


def write_base(
    root: Path,
    layers: Sequence[Sequence[LayerFile]],
    *,
    arch: str = "amd64",
    tag: str = "base",
    env: Sequence[str] = (ENV_PATH,),
) -> str:
    """An OCI layout at ``root`` holding an image of ``layers``; returns ``oci:ROOT:TAG``."""
    from modelcrate.image.layout import write_oci_layout

    built = [build_layer(files) for files in layers]
    config = ImageConfig(
        architecture=arch,
        os="linux",
        env=tuple(env),
        cmd=("/bin/sh",),
        history=tuple(HistoryEntry(f"synthetic layer {i}") for i in range(len(built))),
    )
    write_oci_layout(build_image(config, built), root, tag)
    return f"oci:{root}:{tag}"


MULTIARCH = "/usr/lib/x86_64-linux-gnu"
# What the synthetic base's C library provides (names only; the files are synthetic ELF).
BASE_LIBRARIES = ("libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2")


def libc_files(libraries: Sequence[str] = BASE_LIBRARIES) -> list[LayerFile]:
    """Libraries in the multiarch folder as Debian lays them out (``libm.so.6`` a symlink to
    its versioned file), and the ld.so.conf.d entry that names the folder."""
    files = [
        LayerFile("/etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n"),
        LayerFile("/etc/ld.so.conf.d/x86_64-linux-gnu.conf", f"{MULTIARCH}\n".encode()),
    ]
    for name in libraries:
        real = f"{name}.real"
        files.append(LayerFile(f"{MULTIARCH}/{real}", shared_object([], soname=name), 0o755))
        files.append(LayerFile(f"{MULTIARCH}/{name}", None, link=real))
    return files


def debian_like_base(
    root: Path, version: str = "3.11", *, libraries: Sequence[str] = BASE_LIBRARIES
) -> str:
    """Merged /usr (bin -> usr/bin) and the C library in one layer, Python in the next, as
    Debian has it."""
    first = [
        LayerFile("/bin", None, link="usr/bin"),
        LayerFile("/lib", None, link="usr/lib"),
        LayerFile("/usr/bin/sh", b"#!/bin/sh\n", 0o755),
        LayerFile("/etc/os-release", b"ID=debian\n"),
        *libc_files(libraries),
    ]
    return write_base(root, [first, python_files("/usr", version)])


# -- wheels ------------------------------------------------------------------------------------


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    files: dict[str, bytes] | None = None,
    console_script: bool = False,
) -> Path:
    """A real wheel file in ``folder`` (deterministic zip), with a correct RECORD."""
    dist = f"{name}-{version}.dist-info"
    body = dict(files or {f"{name}/__init__.py": f"VERSION = {version!r}\n".encode()})
    body[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    pure = "true" if tag.endswith("-none-any") else "false"
    body[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: modelcrate-tests\nRoot-Is-Purelib: {pure}\nTag: {tag}\n"
    ).encode()
    if console_script:
        body[f"{dist}/entry_points.txt"] = f"[console_scripts]\n{name} = {name}:main\n".encode()
    record = []
    for path, data in sorted(body.items()):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    body[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = folder / f"{name}-{version}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in sorted(body.items()):
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    out.write_bytes(buf.getvalue())
    return out


def lock_for(wheels: Sequence[Path]) -> bytes:
    """A requirements.lock pinning ``wheels`` with their sha256, as uv writes it."""
    lines = ["# requirements.lock (test)\n"]
    for whl in sorted(wheels):
        name, version = whl.name.split("-")[:2]
        sha = hashlib.sha256(whl.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha}\n")
    return "".join(lines).encode()


def wheelhouse(folder: Path) -> tuple[Path, bytes]:
    """Two wheels (a pure one with a console script, a manylinux one) and their lock."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = [
        make_wheel(folder, "tinypkg", "1.0", console_script=True),
        make_wheel(
            folder,
            "binpkg",
            "2.0",
            tag="cp311-cp311-manylinux_2_17_x86_64",
            files={
                "binpkg/__init__.py": b"",
                "binpkg/_native.so": shared_object(["libc.so.6", "libm.so.6"]),
            },
        ),
    ]
    return folder, lock_for(wheels)


def offline_pip(folder: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(folder))


# -- crates ------------------------------------------------------------------------------------


def crate_with_lock(
    store: Store, name: str, lock: bytes, *, model: bytes = b"fake onnx model bytes\n"
) -> Path:
    """A valid crate in ``store`` whose requirements.lock is ``lock``; returns its folder."""
    manifest = manifest_for(name, model, lock=lock)
    files = {
        MANIFEST_NAME: manifest.dump_yaml(),
        "model/model.onnx": model,
        LOCK_FILE: lock,
        SCAN_FILE: b'{"verdict": "NONE", "counts": {"CRITICAL": 0}}\n',
        SIGNATURE_FILE: signature_json(manifest),
    }
    with store.staging() as stage:
        for rel, data in files.items():
            write_file(stage / rel, data)
        return store.commit(stage, manifest).record.path
