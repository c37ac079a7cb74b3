"""LightGBM: scikit-learn wrappers (``LGBMClassifier``/``LGBMRegressor``) and native Boosters.

Loaded from LightGBM's text format by LightGBM's own parser, or from a pickle/joblib file by
the restricted unpickler. Converted to ONNX with onnxmltools when it reproduces the booster,
else stored as LightGBM text and served by LightGBM itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import TARGET_OPSET, Converted
from modelcrate.flavors.boosters import NativeArtifact, convert_booster
from modelcrate.flavors.infer import apply_override, tabular_signature
from modelcrate.flavors.parity import SampleRows, sample_rows
from modelcrate.runtime.native import LightGBMPredictor
from modelcrate.runtime.outputs import labels_from_values

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = ["convert_lightgbm_model", "load_lightgbm"]

_RANGE = re.compile(r"^\[(-?[0-9.eE+-]+):(-?[0-9.eE+-]+)\]$")


def load_lightgbm(path: Path) -> Any:
    """A ``Booster`` from a LightGBM text model file (LightGBM's own parser)."""
    import lightgbm as lgb

    try:
        return lgb.Booster(model_str=path.read_text(encoding="utf-8"))
    except (lgb.basic.LightGBMError, OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"LightGBM cannot read the model: {exc}",
            path=str(path),
            hint="save it with Booster.save_model('model.txt')",
        ) from exc


def convert_lightgbm_model(
    model: Any, *, source_path: str, sample: pd.DataFrame | None, signature: Signature | None
) -> Converted:
    import lightgbm as lgb

    if isinstance(model, lgb.LGBMModel):
        booster, wrapper = model.booster_, model
    elif isinstance(model, lgb.Booster):
        booster, wrapper = model, None
    else:
        raise InputError(
            f"expected a LightGBM model, got {type(model).__module__}.{type(model).__name__}",
            path=source_path,
            hint="pick the flavor that matches the model (--flavor)",
        )
    text: str = booster.model_to_string()
    header = dict(
        line.split("=", 1) for line in text.split("\n\n", 1)[0].splitlines() if "=" in line
    )
    objective = header.get("objective", "regression").split(" ")[0]
    names = _wrapper_names(wrapper) or [str(n) for n in booster.feature_name()]
    extra = {"lightgbm.objective": objective}
    if objective in ("binary", "multiclass", "multiclassova"):
        if wrapper is not None and hasattr(wrapper, "classes_"):
            classes = [c.item() if hasattr(c, "item") else c for c in wrapper.classes_]
        else:
            classes = list(range(max(int(header.get("num_class", "1")), 2)))
        derived = tabular_signature(
            names, task="classification", classes=classes, probabilities=True, extra=extra
        )
    else:
        derived = tabular_signature(
            names, task="regression", classes=None, probabilities=False, extra=extra
        )
    sig = apply_override(derived, signature, path=source_path)
    rows = sample_rows(sig, sample, ranges=_ranges(header), missing=True)
    reference = _reference(wrapper, text, rows, sig)

    def to_onnx() -> Any:
        from onnxmltools import convert_lightgbm  # type: ignore[import-untyped, unused-ignore]
        from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped, unused-ignore]

        initial = [(sig.tensor_name, FloatTensorType([None, len(names)]))]
        return convert_lightgbm(
            model, initial_types=initial, target_opset=TARGET_OPSET, zipmap=False
        )

    return convert_booster(
        flavor="lightgbm",
        sig=sig,
        rows=rows,
        reference=reference,
        to_onnx=to_onnx,
        native=lambda: NativeArtifact(
            text.encode("utf-8"), "model/model.txt", "lightgbm-text", "lightgbm"
        ),
        source_path=source_path,
    )


def _reference(wrapper: Any, text: str, rows: SampleRows, sig: Signature) -> dict[str, np.ndarray]:
    if wrapper is None:  # a bare Booster: LightGBM itself is the reference
        return LightGBMPredictor(text.encode("utf-8"), sig).predict(rows.inputs())
    x = rows.frame(sig) if hasattr(wrapper, "feature_names_in_") else rows.matrix(sig)
    if sig.task != "classification":
        return {"prediction": np.asarray(wrapper.predict(x))}
    return {
        "label": labels_from_values(wrapper.predict(x)),
        "probabilities": np.asarray(wrapper.predict_proba(x)),
    }


def _ranges(header: dict[str, str]) -> dict[int, tuple[float, float]]:
    """Per-feature ``[min:max]`` from the model's ``feature_infos`` line."""
    ranges: dict[int, tuple[float, float]] = {}
    for j, info in enumerate(header.get("feature_infos", "").split()):
        match = _RANGE.match(info)
        if match:
            ranges[j] = (float(match.group(1)), float(match.group(2)))
    return ranges


def _wrapper_names(wrapper: Any) -> list[str] | None:
    names = getattr(wrapper, "feature_names_in_", None) if wrapper is not None else None
    return [str(n) for n in names] if names is not None else None
