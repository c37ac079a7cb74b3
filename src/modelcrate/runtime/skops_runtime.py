"""The skops fallback: a scikit-learn estimator no ONNX converter handles, stored as skops.

skops never unpickles: it rebuilds objects from a JSON schema and admits only the types it is
told to trust. What to trust is recomputed here, every time a model is loaded, from the scanner's
allowlist (:mod:`modelcrate.crate.skops_trust`): every type, function and method the schema
names must be admitted, whatever the crate claims. ``signature.extra["skops.trusted"]``, written
by the build, is informational: a list naming anything outside the allowlist is refused, and it
never widens what skops may import. This runtime needs scikit-learn (and pandas for models fitted
on frames) in the serving environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.crate.skops_trust import TRUSTED_KEY, check_skops_trust
from modelcrate.errors import InputError
from modelcrate.runtime.inputs import numeric_column, string_column
from modelcrate.runtime.outputs import labels_from_values

__all__ = ["FRAME_KEY", "TRUSTED_KEY", "SkopsPredictor"]

FRAME_KEY = "skops.frame"  # "1" when the estimator was fitted on a DataFrame


class SkopsPredictor:
    """Loads the estimator with ``skops.io.loads`` and calls ``predict``/``predict_proba``."""

    def __init__(self, data: bytes, signature: Signature, *, path: str = "model.skops") -> None:
        import skops.io as sio  # type: ignore[import-untyped, unused-ignore]

        self.signature = signature
        # the allowlist decides (the schema is read as JSON first, nothing imported yet) ...
        trusted = check_skops_trust(data, path=path, claimed=signature.extra.get(TRUSTED_KEY))
        try:
            untrusted = set(sio.get_untrusted_types(data=data))
        except Exception as exc:  # skops raises several types on a bad archive
            raise InputError(
                f"skops cannot read the model: {exc}",
                path=path,
                hint="rebuild the crate from the original model",
            ) from exc
        # ... and skops' own audit may name nothing the schema walk did not admit
        unseen = sorted(untrusted - set(trusted))
        if unseen:
            raise InputError(
                f"the skops model needs types outside modelcrate's allowlist: {unseen}",
                path=path,
                hint="rebuild the crate from the original model with 'modelcrate build'",
            )
        self._model: Any = sio.loads(data, trusted=trusted)
        self._frame = signature.extra.get(FRAME_KEY) == "1"
        self._wanted = {o.name for o in signature.outputs}

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._features(inputs)
        if self.signature.task != "classification":
            pred = np.asarray(self._model.predict(x))
            return {"prediction": pred}
        out: dict[str, np.ndarray] = {}
        if "label" in self._wanted:
            out["label"] = labels_from_values(self._model.predict(x))
        if "probabilities" in self._wanted:
            out["probabilities"] = np.asarray(self._model.predict_proba(x), dtype=np.float32)
        return out

    def _features(self, inputs: Mapping[str, np.ndarray]) -> Any:
        sig = self.signature
        if sig.tensor_name in inputs and sig.tensor_input:
            matrix = np.asarray(inputs[sig.tensor_name], dtype=np.float64)
            cols = {c.name: matrix[:, j] for j, c in enumerate(sig.inputs)}
        else:
            cols = {
                c.name: string_column(inputs, c.name)
                if c.dtype == "string"
                else numeric_column(inputs, c.name).astype(np.float64)
                for c in sig.inputs
            }
        if self._frame:
            import pandas as pd  # type: ignore[import-untyped, unused-ignore]

            return pd.DataFrame(cols)
        if any(c.dtype == "string" for c in sig.inputs):
            return np.column_stack([cols[c.name] for c in sig.inputs]).astype(object)
        return np.column_stack([cols[c.name] for c in sig.inputs])
