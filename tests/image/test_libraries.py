"""Issue 9, section 3: an image whose wheels need a shared library the base lacks is refused at
build time, with the library, the wheel and module that need it, and the package to add.

The ELF reader is checked against ``readelf`` on the real libraries of installed wheels and on
synthetic files of the four ELF kinds; the library lookup in the base against synthetic bases
(``ld.so.conf`` includes, ``LD_LIBRARY_PATH``, whiteouts) and the real mmdebstrap Debian bases
with and without ``libstdc++6`` (from a layout and from a registry). Wheels are real wheel files
installed by the real pip; the "real" ones carry the bytes of scikit-learn's and LightGBM's own
shared objects.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.image.base import resolve_base
from modelcrate.image.containerize import ImageResult, containerize
from modelcrate.image.elf import EM_386, EM_AARCH64, EM_X86_64, ElfError, read_elf
from modelcrate.image.elfdeps import LayerScan, SharedObject, missing_libraries, scan_layer
from modelcrate.image.tarlayer import LayerFile, build_layer
from modelcrate.image.wheels import SITE_PACKAGES
from tests.image.assembly_helpers import (
    crate_with_lock,
    debian_like_base,
    libc_files,
    lock_for,
    make_wheel,
    offline_pip,
    python_files,
    write_base,
)
from tests.image.e2e_env import BaseLayout, in_ci, registry_tags, skopeo_copy
from tests.image.elfgen import shared_object
from tests.image.registry_fixture import RunningRegistry

MANYLINUX = "cp311-cp311-manylinux_2_17_x86_64"
Build = Callable[..., ImageResult]


# ------------------------------------------------------------------------ the ELF reader


@pytest.fixture(scope="session")
def readelf() -> str:
    found = shutil.which("readelf")
    if found is None:
        message = "readelf not found: run scripts/system-deps.sh (binutils)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def _readelf(tool: str, path: Path) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    out = subprocess.run([tool, "-dW", str(path)], capture_output=True, text=True, check=True)
    needed = tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", out.stdout))
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*?)\]", out.stdout)
    paths = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*?)\]", out.stdout)
    dirs = tuple(d for p in paths for d in p.split(":") if d)
    return needed, (soname[0] if soname else None), dirs


def _installed_objects(dist: str) -> list[Path]:
    """The shared objects a distribution installed (its RECORD), found without importing it."""
    files = importlib.metadata.distribution(dist).files or []
    return [Path(str(f.locate())) for f in files if re.search(r"\.so(\.\d+)*$", f.name)]


def test_reader_agrees_with_readelf_on_real_wheels(readelf: str) -> None:
    checked = 0
    for dist in ("scikit-learn", "numpy", "lightgbm", "onnxruntime"):
        for path in _installed_objects(dist):
            data = path.read_bytes()
            info = read_elf(data)
            assert (info.needed, info.soname, info.rpath) == _readelf(readelf, path), path
            assert (info.machine, info.bits, info.little_endian) == (EM_X86_64, 64, True)
            checked += 1
    assert checked > 50
    lightgbm = next(p for p in _installed_objects("lightgbm") if p.name == "lib_lightgbm.so")
    assert "libgomp.so.1" in read_elf(lightgbm.read_bytes()).needed


@pytest.mark.parametrize(
    ("bits", "little", "machine"),
    [(64, True, EM_X86_64), (32, True, EM_386), (64, False, 22), (32, False, 20)],
)
def test_every_elf_kind(
    readelf: str, tmp_path: Path, bits: int, little: bool, machine: int
) -> None:
    data = shared_object(
        ["libstdc++.so.6", "libnotthere.so.1"],
        soname="libx.so.1",
        runpath="$ORIGIN/../x.libs:/opt/lib",
        bits=bits,
        little=little,
        machine=machine,
    )
    (tmp_path / "x.so").write_bytes(data)
    info = read_elf(data)
    assert (info.needed, info.soname, info.rpath) == _readelf(readelf, tmp_path / "x.so")
    assert info.needed == ("libstdc++.so.6", "libnotthere.so.1")
    assert (info.bits, info.little_endian, info.machine) == (bits, little, machine)


def test_a_static_object_needs_nothing() -> None:
    info = read_elf(shared_object(["libc.so.6"], dynamic=False))
    assert (info.dynamic, info.needed) == (False, ())


def test_broken_files_raise_elf_error_only() -> None:
    good = shared_object(["libc.so.6", "libm.so.6"], soname="libq.so.1")
    whole = read_elf(good)
    refused = 0
    for cut in range(len(good)):  # a truncated file: an ElfError, or never a different answer
        try:
            assert read_elf(good[:cut]) == whole
        except ElfError:
            refused += 1
    assert refused == len(good)  # the dynamic section is last: every cut loses part of it
    with pytest.raises(ElfError, match="no loaded segment"):
        read_elf(shared_object(["libc.so.6"], strtab_shift=1 << 20))
    with pytest.raises(ElfError, match="not an ELF file"):
        read_elf(b"MZ\x90\x00")
    with pytest.raises(ElfError, match="unknown ELF class"):
        read_elf(b"\x7fELF\x07\x01" + bytes(58))


@settings(max_examples=300, deadline=None)
@given(
    offset=st.integers(min_value=4, max_value=400),
    junk=st.binary(min_size=1, max_size=16),
)
def test_corrupted_bytes_never_raise_anything_but_elf_error(offset: int, junk: bytes) -> None:
    data = bytearray(shared_object(["libc.so.6", "libstdc++.so.6"], soname="libz.so.9"))
    data[offset : offset + len(junk)] = junk
    try:
        info = read_elf(bytes(data))
    except ElfError:
        return
    assert all(isinstance(n, str) for n in info.needed)


# ------------------------------------------------------------------------ what the base provides


def test_base_libraries_follow_ld_so_conf_includes_ld_library_path_and_whiteouts(
    tmp_path: Path,
) -> None:
    vendor = [
        LayerFile("/etc/ld.so.conf.d/vendor.conf", b"# vendor\n/opt/vendor/lib  # trailing\n"),
        LayerFile("/opt/vendor/lib/libvendor.so.3", shared_object([]), 0o755),
        LayerFile("/opt/cuda/lib64/libcudart.so.12", shared_object([]), 0o755),
        LayerFile("/opt/hidden/libhidden.so.1", shared_object([]), 0o755),
    ]
    removed = [LayerFile("/usr/lib/x86_64-linux-gnu/.wh.libm.so.6", b"")]
    ref = write_base(
        tmp_path / "b",
        [[*libc_files(), *python_files()], vendor, removed],
        env=("PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=/opt/cuda/lib64"),
    )
    base = resolve_base(ref)
    assert base.library_dirs[:3] == (
        "/opt/cuda/lib64",
        "/opt/vendor/lib",
        "/usr/lib/x86_64-linux-gnu",
    )
    assert {"libc.so.6", "libc.so.6.real", "libvendor.so.3", "libcudart.so.12"} <= base.libraries
    assert "libm.so.6" not in base.libraries  # whited out by the last layer
    assert "libhidden.so.1" not in base.libraries  # in no folder the loader searches
    # a cached second read gives the same answer
    again = resolve_base(ref, cache_dir=tmp_path / "cache")
    assert resolve_base(ref, cache_dir=tmp_path / "cache").libraries == again.libraries
    assert again.libraries == base.libraries


# ------------------------------------------------------------------------ scans and refusals


def _scan(objects: dict[str, bytes]) -> LayerScan:
    layer = build_layer(
        [LayerFile(f"{SITE_PACKAGES}/{rel}", data, 0o755) for rel, data in objects.items()]
    )
    return scan_layer(layer)


def test_bundled_libraries_satisfy_needs_by_file_name_and_soname() -> None:
    scan = _scan(
        {
            "pkg/_ext.cpython-311-x86_64-linux-gnu.so": shared_object(
                ["libfoo-1a2b3c4d.so.1.0.0", "libshared.so.2", "libc.so.6"],
                runpath="$ORIGIN/../pkg.libs",
            ),
            "pkg.libs/libfoo-1a2b3c4d.so.1.0.0": shared_object(["libc.so.6"]),
            "other/lib/libshared-real.so": shared_object([], soname="libshared.so.2"),
            "pkg/data.so.txt": b"not a library name",
        }
    )
    assert len(scan.objects) == 3
    assert missing_libraries(scan, frozenset({"libc.so.6"})) == []
    missing = missing_libraries(scan, frozenset())
    assert [m.name for m in missing] == ["libc.so.6"]
    assert {o.path.rsplit("/", 1)[-1] for o in missing[0].needed_by} == {
        "_ext.cpython-311-x86_64-linux-gnu.so",
        "libfoo-1a2b3c4d.so.1.0.0",
    }


def test_gpu_driver_libraries_are_left_to_the_runtime(tmp_path: Path, build: Build) -> None:
    """libcuda.so.1 comes from the host's driver at run time (NVIDIA container toolkit)."""
    house = tmp_path / "house"
    house.mkdir()
    wheel = make_wheel(
        house,
        "gpupkg",
        "1.0",
        tag=MANYLINUX,
        files={"gpupkg/_drv.so": shared_object(["libcuda.so.1", "libc.so.6"])},
    )
    result = build([wheel], debian_like_base(tmp_path / "base"))
    assert result.libraries is not None
    assert result.libraries.from_runtime == ("libcuda.so.1",)
    assert result.libraries.from_base == ("libc.so.6",)


def test_foreign_and_unreadable_objects_are_listed_not_checked(tmp_path: Path) -> None:
    scan = _scan(
        {
            "pkg/x86.so": shared_object(["libc.so.6"]),
            "pkg/arm.so": shared_object(["libnotthere.so.1"], machine=EM_AARCH64),
            "pkg/i386.so": shared_object(["libnotthere.so.1"], bits=32, machine=EM_386),
            "pkg/fake.so": b"\x7fELF truncated",
            "pkg/text.so": b"INPUT(-lfoo)\n",
        }
    )
    assert [o.path.rsplit("/", 1)[-1] for o in scan.objects] == ["x86.so"]
    assert {p.rsplit("/", 1)[-1]: kind for p, kind in scan.foreign} == {
        "arm.so": "ELF 64-bit LSB aarch64",
        "i386.so": "ELF 32-bit LSB i386",
    }
    assert {p.rsplit("/", 1)[-1] for p, _ in scan.unreadable} == {"fake.so", "text.so"}
    assert missing_libraries(scan, frozenset({"libc.so.6"})) == []


def test_the_scan_is_cached_under_the_layer_digest(tmp_path: Path) -> None:
    layer = build_layer(
        [LayerFile(f"{SITE_PACKAGES}/p/a.so", shared_object(["libnotthere.so.1"]), 0o755)]
    )
    first = scan_layer(layer, cache_dir=tmp_path)
    cached = list(tmp_path.glob("elfdeps-*.json"))
    assert [p.name for p in cached] == [f"elfdeps-{layer.digest[7:]}-{EM_X86_64}.json"]
    assert scan_layer(layer, cache_dir=tmp_path) == first
    assert first.objects == (
        SharedObject(f"{SITE_PACKAGES}/p/a.so", "", ("libnotthere.so.1",), None),
    )


# ------------------------------------------------------------------------ containerize


def _crate(tmp_path: Path, wheels: Sequence[Path]) -> tuple[Store, Path]:
    store = Store(tmp_path / "store")
    crate_with_lock(store, "lib", lock_for(wheels))
    return store, wheels[0].parent


@pytest.fixture
def build(tmp_path: Path) -> Callable[..., ImageResult]:
    def run(wheels: Sequence[Path], base: str, **kwargs: object) -> ImageResult:
        store, house = _crate(tmp_path / uuid.uuid4().hex[:8], wheels)
        return containerize(
            "lib",
            base=base,
            store=store,
            pip_args=offline_pip(house),
            **kwargs,  # type: ignore[arg-type]
        )

    return run


def test_a_missing_library_is_refused_with_the_wheel_and_module(
    tmp_path: Path, build: Build
) -> None:
    house = tmp_path / "house"
    house.mkdir()
    ext = "needsnot/_core.cpython-311-x86_64-linux-gnu.so"
    wheel = make_wheel(
        house,
        "needsnot",
        "1.0",
        tag=MANYLINUX,
        files={ext: shared_object(["libnotthere.so.1", "libc.so.6"]), "needsnot/__init__.py": b""},
    )
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        build([wheel], debian_like_base(tmp_path / "base"), output=f"oci:{out}")
    message = err.value.message
    assert "lacks shared libraries" in message
    assert f"libnotthere.so.1 (needed by needsnot 1.0: {ext})" in message
    assert "libc.so.6 (" not in message  # the base has it
    assert "cannot open shared object file" in message
    assert err.value.hint is not None
    assert "apt-file search libnotthere.so.1" in err.value.hint
    assert not out.exists()  # nothing written

    # the same wheel on a base that has the library: built, and the report says what it used
    ok = build(
        [wheel],
        debian_like_base(tmp_path / "base2", libraries=("libc.so.6", "libnotthere.so.1")),
        output=f"oci:{out}",
    )
    assert ok.libraries is not None
    assert (ok.libraries.checked, ok.libraries.from_base) == (1, ("libc.so.6", "libnotthere.so.1"))


def test_a_library_the_wheel_bundles_is_not_asked_of_the_base(tmp_path: Path, build: Build) -> None:
    """auditwheel's layout: the extension links a renamed copy in ``<pkg>.libs/``."""
    house = tmp_path / "house"
    house.mkdir()
    vendored = "libgomp-a34b3233.so.1.0.0"
    wheel = make_wheel(
        house,
        "bundles",
        "2.1",
        tag=MANYLINUX,
        files={
            "bundles/__init__.py": b"",
            "bundles/_omp.cpython-311-x86_64-linux-gnu.so": shared_object(
                [vendored, "libc.so.6"], runpath="$ORIGIN/../bundles.libs"
            ),
            f"bundles.libs/{vendored}": shared_object(["libc.so.6"], soname=vendored),
        },
    )
    result = build([wheel], debian_like_base(tmp_path / "base"))
    assert result.libraries is not None
    assert result.libraries.bundled == (vendored,)
    assert result.libraries.from_base == ("libc.so.6",)
    # without the bundled copy, the same extension is refused, with that name and the owner
    lone = make_wheel(
        house,
        "lonely",
        "2.1",
        tag=MANYLINUX,
        files={"lonely/_omp.so": shared_object(["libgomp.so.1", "libc.so.6"])},
    )
    with pytest.raises(InputError, match=r"libgomp\.so\.1 \(needed by lonely 2\.1") as err:
        build([lone], debian_like_base(tmp_path / "base"))
    assert err.value.hint is not None
    assert "add libgomp1 to the base" in err.value.hint


# ------------------------------------------------------------------------ real bases, real bytes


def _real_wheel(house: Path, name: str, dist: str, pick: Callable[[Path], bool]) -> Path:
    """A wheel named ``name`` holding the bytes of ``dist``'s installed shared objects that
    ``pick`` selects, at the same paths (auditwheel's ``<pkg>.libs`` folders included)."""
    files: dict[str, bytes] = {f"{name}_marker/__init__.py": b""}
    site = Path(str(importlib.metadata.distribution(dist).locate_file("")))
    for path in _installed_objects(dist):
        if pick(path):
            files[path.relative_to(site).as_posix()] = path.read_bytes()
    assert len(files) > 1, f"no shared object of {dist} selected"
    return make_wheel(house, name, "1.0", tag=MANYLINUX, files=files)


@pytest.fixture(scope="module")
def real_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    house = tmp_path_factory.mktemp("real-wheels")
    return {
        # a C++ extension (libstdc++.so.6) and an OpenMP one with its bundled libgomp copy
        "sklearn": _real_wheel(
            house,
            "realsk",
            "scikit-learn",
            lambda p: (
                p.name.startswith(("_fast_dict.", "_openmp_helpers."))
                or p.parent.name == "scikit_learn.libs"
            ),
        ),
        # LightGBM links the system's libgomp.so.1 (its docs: install libgomp1)
        "lightgbm": _real_wheel(house, "reallgbm", "lightgbm", lambda p: True),
    }


def test_the_real_base_without_libstdcxx_is_refused(
    bare_base_layout: BaseLayout, real_wheels: dict[str, Path], build: Build, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as err:
        build([real_wheels["sklearn"]], bare_base_layout.ref, output=f"oci:{tmp_path / 'o'}")
    message = err.value.message
    assert "libstdc++.so.6 (needed by realsk 1.0: sklearn/utils/_fast_dict.cpython-311" in message
    assert "libgomp" not in message  # the bundled copy in scikit_learn.libs counts
    assert "'libstdc++.so.6: cannot open shared object file'" in message
    assert err.value.hint is not None
    assert "add libgcc-s1, libstdc++6 to the base" not in err.value.hint  # libgcc_s is there
    assert "add libstdc++6 to the base" in err.value.hint
    assert not (tmp_path / "o").exists()


def test_the_real_base_with_libstdcxx_passes(
    base_layout: BaseLayout, real_wheels: dict[str, Path], build: Build
) -> None:
    result = build([real_wheels["sklearn"]], base_layout.ref)
    assert result.libraries is not None
    assert "libstdc++.so.6" in result.libraries.from_base
    assert any(n.startswith("libgomp-") for n in result.libraries.bundled)


def test_the_real_base_without_libgomp1_is_refused_for_lightgbm(
    base_layout: BaseLayout, real_wheels: dict[str, Path], build: Build
) -> None:
    with pytest.raises(InputError) as err:
        build([real_wheels["lightgbm"], real_wheels["sklearn"]], base_layout.ref)
    assert "libgomp.so.1 (needed by reallgbm 1.0: lightgbm/lib/lib_lightgbm.so)" in (
        err.value.message
    )
    assert "libstdc++.so.6 (" not in err.value.message
    assert err.value.hint is not None
    assert "add libgomp1 to the base" in err.value.hint


def test_a_registry_base_is_checked_too(
    bare_base_layout: BaseLayout,
    registry: RunningRegistry,
    real_wheels: dict[str, Path],
    build: Build,
) -> None:
    base = f"{registry.host}/pybase-bare:bookworm"
    skopeo_copy(bare_base_layout.ref, f"docker://{base}")
    repo = f"models/bare-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InputError, match=r"libstdc\+\+\.so\.6 \(needed by realsk"):
        build(
            [real_wheels["sklearn"]],
            base,
            insecure_registry=True,
            push=f"{registry.host}/{repo}:1",
        )
    assert registry_tags(registry.url, repo) == []  # nothing pushed
