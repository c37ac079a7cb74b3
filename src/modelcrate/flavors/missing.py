"""Missing values (NaN) in scikit-learn models: which models take them, and whether the ONNX
graph reproduces what the original does with them.

Pipelines with an imputer are checked with missing values in the parity rows themselves. Tree
models accept NaN natively (scikit-learn >= 1.4), but skl2onnx does not route NaN as they do;
when a probe with missing values disagrees, the signature says so (``extra["missing_values"]
= "reject"``) and the ONNX runtime refuses NaN instead of answering differently from the
original. A ``--sample`` with missing values makes the main parity check fail instead, and the
build falls back to skops, which reproduces them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import Parity, ParityError
from modelcrate.flavors.parity import ONNX_TOLERANCE, compare, sample_rows
from modelcrate.runtime.onnx_runtime import MISSING_KEY

__all__ = ["has_imputer", "nan_native", "probe_missing"]

_IMPUTERS = ("SimpleImputer", "KNNImputer", "IterativeImputer", "MissingIndicator")


def has_imputer(parts: Iterator[Any]) -> bool:
    return any(type(e).__name__ in _IMPUTERS for e in parts)


def nan_native(parts: Iterator[Any]) -> bool:
    """Every step accepts NaN (scikit-learn's ``allow_nan`` input tag)."""
    try:
        from sklearn.utils import get_tags

        return all(get_tags(e).input_tags.allow_nan for e in parts if not isinstance(e, str))
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def probe_missing(
    model: Any,
    sig: Signature,
    data: bytes,
    parity: Parity,
    *,
    ranges: dict[int, tuple[float, float]],
    path: str,
) -> tuple[Signature, Parity]:
    """Run rows with missing values through both; mark the signature when they disagree."""
    from modelcrate.flavors.sklearn import reference_outputs
    from modelcrate.runtime import predictor_from_bytes

    rows = sample_rows(sig, None, ranges=ranges, missing=True)
    try:
        reference = reference_outputs(model, rows, sig, path=path)
        got = predictor_from_bytes(data, "onnxruntime", sig, path=path).predict(rows.inputs())
        compare(sig, reference, got, rows, tolerance=ONNX_TOLERANCE, path=path)
    except (ParityError, InputError):
        note = (
            "missing values: the ONNX graph does not reproduce the original's handling of NaN, "
            "so the served model rejects them (build with a --sample that has missing values "
            "to serve the original's handling with the skops runtime)"
        )
        extra = {**sig.extra, MISSING_KEY: "reject"}
        return replace(sig, extra=extra), replace(parity, details=f"{parity.details}; {note}")
    count = int(sum(np.isnan(v).sum() for v in rows.columns.values() if v.dtype.kind == "f"))
    note = f"missing values: {count} NaN inputs reproduced"
    return sig, replace(parity, details=f"{parity.details}; {note}")
