"""What a serving image leaves out of the installed wheels, and debug info stripped from ELF files.

Nothing here is needed to import the packages or to serve: test suites shipped inside wheels,
C headers, Cython sources, type stubs, static libraries, the training-side tool folders of ONNX
Runtime (transformers, quantization, tools) and NumPy's build helpers (f2py, distutils). Shared
libraries keep their code and symbols; only DWARF debug sections go (``strip --strip-debug``,
when binutils is installed), which takes e.g. uvloop's extension from 13.6 MB to 1.9 MB.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# Folder names dropped wherever they appear below a package.
PRUNED_DIR_NAMES = frozenset({"tests", "testing_data"})
# Package sub-trees dropped (relative to site-packages).
PRUNED_TREES = frozenset(
    {
        "onnxruntime/transformers",
        "onnxruntime/quantization",
        "onnxruntime/tools",
        "numpy/f2py",
        "numpy/distutils",
    }
)
PRUNED_SUFFIXES = (".pyi", ".h", ".hpp", ".c", ".cpp", ".pyx", ".pxd", ".pxi", ".a")
_ELF = b"\x7fELF"


def keep_dir(rel_dir: str, name: str) -> bool:
    """Whether the folder ``rel_dir/name`` (relative to site-packages) goes into the image."""
    rel = name if rel_dir in ("", ".") else f"{rel_dir}/{name}"
    top_level = rel_dir in ("", ".")
    return rel not in PRUNED_TREES and (top_level or name not in PRUNED_DIR_NAMES)


def keep_file(name: str) -> bool:
    return not name.endswith(PRUNED_SUFFIXES)


def strip_tool() -> str | None:
    """The ``strip`` binary, or None (then files are kept as they are)."""
    return shutil.which("strip")


def strippable(name: str, rel_dir: str) -> bool:
    """Python extension modules only: the libraries auditwheel vendors in ``<pkg>.libs/`` are
    patched by patchelf, and strip breaks their program headers ("not page-aligned")."""
    top = rel_dir.split("/", 1)[0]
    return (".cpython-" in name or name.endswith(".abi3.so")) and not top.endswith(".libs")


def strip_debug(data: bytes, tool: str | None) -> bytes:
    """``data`` without DWARF debug sections when it is an ELF file that has them."""
    if tool is None or not data.startswith(_ELF) or b".debug_info" not in data:
        return data
    with tempfile.TemporaryDirectory(prefix="modelcrate-strip-") as tmp:
        path = Path(tmp) / "lib.so"
        path.write_bytes(data)
        done = subprocess.run(
            [tool, "--strip-debug", str(path)], capture_output=True, check=False, timeout=120
        )
        if done.returncode != 0:
            return data  # an odd file: keep it exactly as the wheel had it
        stripped = path.read_bytes()
    return stripped if len(stripped) < len(data) else data
