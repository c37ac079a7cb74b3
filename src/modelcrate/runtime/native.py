"""Native booster predictors: XGBoost (JSON/UBJ) and LightGBM (text), read by their own safe
parsers. Used when the ONNX converters do not reproduce a booster exactly."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.runtime.inputs import as_matrix
from modelcrate.runtime.outputs import labels_from_index

__all__ = ["LightGBMPredictor", "XGBoostPredictor", "classification_outputs"]


def classification_outputs(proba: np.ndarray, signature: Signature) -> dict[str, np.ndarray]:
    """``label`` (argmax over the signature's classes) and/or ``probabilities``."""
    if proba.ndim == 1:
        proba = np.stack([1.0 - proba, proba], axis=1)
    proba = proba.astype(np.float32, copy=False)
    wanted = {o.name for o in signature.outputs}
    out: dict[str, np.ndarray] = {}
    if "label" in wanted:
        out["label"] = labels_from_index(np.argmax(proba, axis=1), signature)
    if "probabilities" in wanted:
        out["probabilities"] = proba
    return out


class XGBoostPredictor:
    """An ``xgboost.Booster`` loaded from its JSON or UBJSON bytes."""

    def __init__(self, data: bytes, signature: Signature, *, path: str = "model.json") -> None:
        import xgboost as xgb

        self.signature = signature
        self._booster = xgb.Booster()
        try:
            self._booster.load_model(bytearray(data))
            config = json.loads(self._booster.save_config())
        except (xgb.core.XGBoostError, ValueError) as exc:
            raise InputError(
                f"XGBoost cannot read the model: {exc}", path=path, hint="re-save the model"
            ) from exc
        self.objective: str = config["learner"]["objective"]["name"]
        self._softmax = self.objective == "multi:softmax"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = as_matrix(inputs, self.signature)
        if self.signature.task != "classification":
            pred = np.asarray(self._booster.inplace_predict(x))
            return {"prediction": _shaped(pred, self.signature)}
        if self._softmax:  # margins -> probabilities, as multi:softprob would give
            margin = np.asarray(self._booster.inplace_predict(x, predict_type="margin"))
            margin = margin - margin.max(axis=1, keepdims=True)
            expo = np.exp(margin)
            proba = expo / expo.sum(axis=1, keepdims=True)
        else:
            proba = np.asarray(self._booster.inplace_predict(x))
        return classification_outputs(proba, self.signature)


class LightGBMPredictor:
    """A ``lightgbm.Booster`` loaded from its text model."""

    def __init__(self, data: bytes, signature: Signature, *, path: str = "model.txt") -> None:
        import lightgbm as lgb

        self.signature = signature
        try:
            self._booster = lgb.Booster(model_str=data.decode("utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(
                f"LightGBM cannot read the model: {exc}", path=path, hint="re-save the model"
            ) from exc

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = as_matrix(inputs, self.signature)
        pred = np.asarray(self._booster.predict(x))
        if self.signature.task != "classification":
            return {"prediction": _shaped(pred, self.signature)}
        return classification_outputs(pred, self.signature)


def _shaped(pred: np.ndarray, signature: Signature) -> np.ndarray:
    shape = next((o.shape for o in signature.outputs if o.name == "prediction"), ())
    if shape == () and pred.ndim == 2 and pred.shape[1] == 1:
        return pred.reshape(-1)
    return pred
