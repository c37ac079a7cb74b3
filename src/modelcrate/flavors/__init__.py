"""Flavors: detect, safely load and convert a model to a safe serving format, with parity.

One module per framework (:mod:`.sklearn`, :mod:`.xgboost`, :mod:`.lightgbm`, :mod:`.onnx`);
each derives the signature from the model (a user signature overrides it after a check),
writes deterministic artifacts and compares the served artifact with the original model
(:mod:`.parity`). Frameworks are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import (
    FLAVORS,
    Artifact,
    Converted,
    Parity,
    ParityError,
    UnsupportedModelError,
)
from modelcrate.flavors.loading import detect_flavor, load_model

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "FLAVORS",
    "Artifact",
    "Converted",
    "Parity",
    "ParityError",
    "UnsupportedModelError",
    "convert",
    "detect_flavor",
    "load_model",
]


def convert(
    model: Any,
    flavor: str,
    *,
    source_path: Path,
    sample: pd.DataFrame | None,
    signature: Signature | None,
) -> Converted:
    """Convert ``model`` to a safe serving format, derive its signature, check parity.

    Raises :class:`ParityError` when the converted model is beyond tolerance,
    :class:`UnsupportedModelError` when nothing can convert it, :class:`InputError` when the
    user's signature or sample does not match the model.
    """
    where = str(source_path)
    if flavor == "sklearn":
        from modelcrate.flavors.sklearn import convert_sklearn_model

        return convert_sklearn_model(model, source_path=where, sample=sample, signature=signature)
    if flavor == "xgboost":
        from modelcrate.flavors.xgboost import convert_xgboost_model

        return convert_xgboost_model(model, source_path=where, sample=sample, signature=signature)
    if flavor == "lightgbm":
        from modelcrate.flavors.lightgbm import convert_lightgbm_model

        return convert_lightgbm_model(model, source_path=where, sample=sample, signature=signature)
    if flavor == "onnx":
        from modelcrate.flavors.onnx import convert_onnx_model

        return convert_onnx_model(model, source_path=where, sample=sample, signature=signature)
    raise InputError(
        f"unknown flavor {flavor!r}", path=where, hint=f"use one of: {', '.join(FLAVORS)}"
    )
