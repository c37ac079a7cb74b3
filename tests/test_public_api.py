"""The public surface is small and deliberate: changing it must be a conscious decision."""

from __future__ import annotations

import importlib

import modelcrate

# `modelcrate.scan` is the function (the API); the subpackage lives in sys.modules.
scan_pkg = importlib.import_module("modelcrate.scan")


def test_top_level_all() -> None:
    assert modelcrate.__all__ == sorted(modelcrate.__all__)
    assert set(modelcrate.__all__) == {
        "Finding",
        "InputError",
        "Location",
        "ModelcrateError",
        "Policy",
        "ScanReport",
        "Severity",
        "__version__",
        "build",
        "load_policy",
        "scan",
    }


def test_scan_package_all() -> None:
    assert scan_pkg.__all__ == sorted(scan_pkg.__all__)
    for name in scan_pkg.__all__:
        assert getattr(scan_pkg, name) is not None
    assert modelcrate.scan is scan_pkg.scan


def test_build_is_lazy() -> None:
    from modelcrate.crate.build import build

    assert modelcrate.build is build


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modelcrate, modelcrate.cli; "
        "heavy = ('torch', 'numpy', 'sklearn', 'onnx', 'h5py', 'py7zr'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
