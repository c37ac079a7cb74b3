"""The serving image leaves out what no server imports, and strips debug info safely."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from modelcrate.image import slim


def test_pruning_rules() -> None:
    assert not slim.keep_dir("numpy/_core", "tests")
    assert not slim.keep_dir("onnxruntime", "transformers")
    assert not slim.keep_dir("numpy", "f2py")
    assert slim.keep_dir(".", "tests")  # a top-level package that happens to be named so
    assert slim.keep_dir("onnxruntime", "capi")
    assert not slim.keep_file("ndarraytypes.h")
    assert not slim.keep_file("__init__.pyi")
    assert slim.keep_file("__init__.py")
    assert slim.keep_file("libonnxruntime.so.1.32.0")


def test_vendored_libraries_are_never_stripped() -> None:
    # auditwheel's patchelf-ed libraries break when stripped ("not page-aligned")
    assert not slim.strippable("libgfortran-040039e1.so.5.0.0", "numpy.libs")
    assert not slim.strippable("libscipy_openblas64_.so", "numpy.libs")
    assert slim.strippable("loop.cpython-311-x86_64-linux-gnu.so", "uvloop")
    assert not slim.strippable("data.bin", "pkg")


def test_non_elf_and_missing_tool_are_untouched() -> None:
    assert slim.strip_debug(b"not an elf", "strip") == b"not an elf"
    assert slim.strip_debug(b"\x7fELF....debug_info", None) == b"\x7fELF....debug_info"


def test_a_stripped_extension_still_imports_and_runs(tmp_path: Path) -> None:
    import uvloop  # installed by the serve extra (uvicorn[standard])

    tool = slim.strip_tool()
    assert tool is not None, "binutils' strip is part of the build toolchain here"
    pkg = Path(uvloop.__file__).parent
    copy = tmp_path / "uvloop"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (ext,) = copy.glob("loop.cpython-*.so")
    before = ext.read_bytes()
    after = slim.strip_debug(before, tool)
    assert after.startswith(b"\x7fELF")
    assert len(after) <= len(before)
    ext.write_bytes(after)
    code = (
        "import asyncio, uvloop; loop = uvloop.new_event_loop(); "
        "print(loop.run_until_complete(asyncio.sleep(0, 'ran')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "ran"
