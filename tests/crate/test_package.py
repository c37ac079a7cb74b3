"""The crate package's surface stays small, and reading a signature stays light."""

from __future__ import annotations

import subprocess
import sys

import modelcrate.crate as crate_pkg


def test_all_is_sorted_and_resolves() -> None:
    assert crate_pkg.__all__ == sorted(crate_pkg.__all__)
    assert set(crate_pkg.__all__) == {
        "BuiltCrate",
        "Manifest",
        "Signature",
        "Store",
        "load_manifest",
        "verify_crate",
    }
    for name in crate_pkg.__all__:
        assert getattr(crate_pkg, name) is not None


def test_signature_import_does_not_load_pydantic_or_frameworks() -> None:
    code = (
        "import sys, modelcrate.crate.signature, modelcrate.cli.crate_cmd\n"
        "heavy = {'pydantic', 'sklearn', 'onnx', 'onnxruntime', 'pandas', 'yaml', 'numpy'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
