"""The public surface of flavors/formats/runtime, and no heavy import at import time."""

from __future__ import annotations

import json
import subprocess
import sys

import modelcrate.flavors
import modelcrate.formats
import modelcrate.runtime


def test_public_names_are_importable() -> None:
    for module in (modelcrate.flavors, modelcrate.formats, modelcrate.runtime):
        names = list(module.__all__)
        assert len(set(names)) == len(names), module.__name__
        assert all(hasattr(module, n) for n in names)
    assert set(modelcrate.flavors.__all__) >= {
        "Artifact", "Converted", "Parity", "ParityError", "convert", "detect_flavor", "load_model",
    }  # fmt: skip
    assert set(modelcrate.runtime.__all__) >= {"Predictor", "load_predictor"}


def test_importing_the_packages_loads_no_framework() -> None:
    code = (
        "import json, sys, modelcrate.flavors, modelcrate.formats, modelcrate.runtime\n"
        "heavy = ('sklearn', 'skl2onnx', 'onnx', 'onnxruntime', 'onnxmltools', 'xgboost',\n"
        "         'lightgbm', 'pandas', 'joblib', 'skops', 'torch')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
