"""XGBoost: scikit-learn wrappers (``XGBClassifier``/``XGBRegressor``) and native Boosters.

Loaded from XGBoost JSON/UBJSON by XGBoost's own parser, or from a pickle/joblib file by the
restricted unpickler. Converted to ONNX with onnxmltools when it reproduces the booster, else
stored as XGBoost JSON and served by XGBoost itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import TARGET_OPSET, Converted, UnsupportedModelError
from modelcrate.flavors.boosters import NativeArtifact, convert_booster
from modelcrate.flavors.infer import apply_override, tabular_signature
from modelcrate.flavors.parity import SampleRows, sample_rows
from modelcrate.runtime.native import XGBoostPredictor
from modelcrate.runtime.outputs import labels_from_values

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = ["convert_xgboost_model", "load_xgboost"]

_CLASSIFY = ("binary:logistic", "multi:softprob", "multi:softmax")


def load_xgboost(path: Path) -> Any:
    """A ``Booster`` from an XGBoost JSON or UBJSON file (XGBoost's own parser)."""
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(path.read_bytes()))
    except (xgb.core.XGBoostError, OSError) as exc:
        raise InputError(
            f"XGBoost cannot read the model: {exc}",
            path=str(path),
            hint="save it with Booster.save_model('model.json') (or .ubj)",
        ) from exc
    return booster


def convert_xgboost_model(
    model: Any, *, source_path: str, sample: pd.DataFrame | None, signature: Signature | None
) -> Converted:
    import xgboost as xgb

    if isinstance(model, xgb.XGBModel):
        booster, wrapper = model.get_booster(), model
    elif isinstance(model, xgb.Booster):
        booster, wrapper = model, None
    else:
        raise InputError(
            f"expected an XGBoost model, got {type(model).__module__}.{type(model).__name__}",
            path=source_path,
            hint="pick the flavor that matches the model (--flavor)",
        )
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    names = _wrapper_names(wrapper) or list(
        booster.feature_names or [f"f{i}" for i in range(booster.num_features())]
    )
    if objective in _CLASSIFY:
        classes: list[Any] | None
        if wrapper is not None and hasattr(wrapper, "classes_"):
            classes = [c.item() if hasattr(c, "item") else c for c in wrapper.classes_]
        else:
            k = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
            classes = list(range(max(k, 2)))
        derived = tabular_signature(
            names, task="classification", classes=classes, probabilities=True,
            extra={"xgboost.objective": objective},
        )  # fmt: skip
    elif objective.startswith(("binary:", "multi:")):
        raise UnsupportedModelError(
            f"XGBoost objective {objective!r} gives no probabilities",
            path=source_path,
            hint="train with binary:logistic or multi:softprob",
        )
    else:
        derived = tabular_signature(
            names, task="regression", classes=None, probabilities=False,
            extra={"xgboost.objective": objective},
        )  # fmt: skip
    sig = apply_override(derived, signature, path=source_path)
    rows = sample_rows(sig, sample, ranges=_ranges(booster, names), missing=True)
    native_json = bytes(booster.save_raw("json"))
    reference = _reference(wrapper, native_json, rows, sig)

    def to_onnx() -> Any:
        from onnxmltools import convert_xgboost  # type: ignore[import-untyped, unused-ignore]
        from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped, unused-ignore]

        if objective == "multi:softmax":
            raise NotImplementedError("multi:softmax is served natively")
        initial = [(sig.tensor_name, FloatTensorType([None, len(names)]))]
        # onnxmltools reads features by their default names f0, f1, ...: convert a copy
        # whose booster carries no feature names (the graph takes a positional tensor anyway)
        plain = copy.deepcopy(model)
        (plain.get_booster() if wrapper is not None else plain).feature_names = None
        return convert_xgboost(plain, initial_types=initial, target_opset=TARGET_OPSET)

    return convert_booster(
        flavor="xgboost",
        sig=sig,
        rows=rows,
        reference=reference,
        to_onnx=to_onnx,
        native=lambda: NativeArtifact(native_json, "model/model.json", "xgboost-json", "xgboost"),
        source_path=source_path,
    )


def _reference(
    wrapper: Any, native_json: bytes, rows: SampleRows, sig: Signature
) -> dict[str, np.ndarray]:
    if wrapper is None:  # a bare Booster: XGBoost itself is the reference
        return XGBoostPredictor(native_json, sig).predict(rows.inputs())
    x = rows.frame(sig) if hasattr(wrapper, "feature_names_in_") else rows.matrix(sig)
    if sig.task != "classification":
        return {"prediction": np.asarray(wrapper.predict(x))}
    return {
        "label": labels_from_values(wrapper.predict(x)),
        "probabilities": np.asarray(wrapper.predict_proba(x)),
    }


def _ranges(booster: Any, names: list[str]) -> dict[int, tuple[float, float]]:
    """Split thresholds per feature, from the booster's JSON tree dump."""
    ranges: dict[int, tuple[float, float]] = {}
    index = {n: i for i, n in enumerate(names)}

    def visit(node: dict[str, Any]) -> None:
        if "split" in node and "split_condition" in node:
            split = node["split"]
            j = index.get(split) if split in index else _fname(split)
            if j is not None:
                t = float(node["split_condition"])
                lo, hi = ranges.get(j, (t, t))
                ranges[j] = (min(lo, t), max(hi, t))
        for child in node.get("children", []):
            visit(child)

    for tree in booster.get_dump(dump_format="json")[:50]:
        visit(json.loads(tree))
    return ranges


def _fname(split: str) -> int | None:
    return int(split[1:]) if split.startswith("f") and split[1:].isdigit() else None


def _wrapper_names(wrapper: Any) -> list[str] | None:
    names = getattr(wrapper, "feature_names_in_", None) if wrapper is not None else None
    return [str(n) for n in names] if names is not None else None
