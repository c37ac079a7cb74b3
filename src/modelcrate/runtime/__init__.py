"""What a running crate uses to predict: NumPy plus ONNX Runtime or a native booster library.

Nothing here imports the training stack (scikit-learn, skl2onnx, pandas), except the skops
fallback runtime, which is scikit-learn by nature.

Inputs: one 1-D array per signature column (strings as object/str arrays), or, when
``signature.tensor_input``, ``{signature.tensor_name: [rows, features]}`` (columns are accepted
too and stacked). Outputs: classification -> ``label`` (1-D object array of the signature's
class labels) and, when the signature lists it, ``probabilities`` (float32
``[rows, classes]``); regression -> ``prediction`` (1-D, or ``[rows, targets]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.runtime.inputs import PredictionInputError

__all__ = [
    "RUNTIMES",
    "PredictionInputError",
    "Predictor",
    "load_predictor",
    "predictor_from_bytes",
]

RUNTIMES: tuple[str, ...] = ("onnxruntime", "xgboost", "lightgbm", "skops")


class Predictor(Protocol):
    """A loaded model: arrays in, arrays out (see the module docstring)."""

    signature: Signature

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def load_predictor(
    crate_dir: Path,
    runtime: str,
    artifacts: list[str],
    signature: Signature,
    *,
    threads: int | None = None,
) -> Predictor:
    """Load the crate's model artifact (the first ``model/`` file in ``artifacts``).

    ONNX Runtime loads the graph from its path (the caller verified the file's digest): from
    bytes, a session keeps those bytes for its lifetime, a second copy of the weights, and
    external data files could not be found. ``threads``: ONNX Runtime's intra-op threads."""
    root = Path(crate_dir).resolve()
    model_files = [a for a in artifacts if a.startswith("model/")]
    if not model_files:
        raise InputError(
            f"the crate lists no model artifact (artifacts: {artifacts})",
            path=str(root),
            hint="rebuild the crate",
        )
    target = (root / model_files[0]).resolve()
    if not target.is_relative_to(root):
        raise InputError(
            f"artifact path {model_files[0]!r} leaves the crate folder",
            path=str(root),
            hint="the manifest is forged or corrupt; rebuild the crate",
        )
    if runtime == "onnxruntime":
        from modelcrate.runtime.onnx_runtime import OnnxPredictor

        if not target.is_file():
            raise InputError(
                "cannot read the model artifact: it is missing",
                path=str(target),
                hint="the crate is incomplete; re-import or rebuild it",
            )
        return OnnxPredictor(str(target), signature, path=str(target), threads=threads)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the model artifact: {exc.strerror}",
            path=str(target),
            hint="the crate is incomplete; re-import or rebuild it",
        ) from exc
    return predictor_from_bytes(data, runtime, signature, path=str(target))


def predictor_from_bytes(
    data: bytes, runtime: str, signature: Signature, *, path: str = "model"
) -> Predictor:
    """A predictor for artifact bytes already in memory (the build's parity check uses it)."""
    if runtime == "onnxruntime":
        from modelcrate.runtime.onnx_runtime import OnnxPredictor

        return OnnxPredictor(data, signature, path=path)
    if runtime == "xgboost":
        from modelcrate.runtime.native import XGBoostPredictor

        return XGBoostPredictor(data, signature, path=path)
    if runtime == "lightgbm":
        from modelcrate.runtime.native import LightGBMPredictor

        return LightGBMPredictor(data, signature, path=path)
    if runtime == "skops":
        from modelcrate.runtime.skops_runtime import SkopsPredictor

        return SkopsPredictor(data, signature, path=path)
    raise InputError(
        f"unknown runtime {runtime!r}",
        path=path,
        hint=f"the crate needs one of: {', '.join(RUNTIMES)}",
    )
