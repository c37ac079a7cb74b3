"""Request arrays -> the arrays a runtime feeds its model: one conversion per batch.

Inputs arrive as one 1-D array per signature column, or (``signature.tensor_input``) as
``{tensor_name: [rows, features]}``. Numeric data becomes float32 (NaN for missing values);
string columns become object arrays of ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError

__all__ = ["PredictionInputError", "as_matrix", "numeric_column", "string_column"]


class PredictionInputError(InputError):
    """The request's arrays do not fit the signature (missing column, wrong shape or type)."""

    code = "prediction-input"


def as_matrix(inputs: Mapping[str, np.ndarray], signature: Signature) -> np.ndarray:
    """A C-contiguous float32 ``[rows, features]`` matrix from a tensor or from columns."""
    n = len(signature.inputs)
    if signature.tensor_name in inputs:
        try:
            arr = np.asarray(inputs[signature.tensor_name], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise PredictionInputError(
                f"input {signature.tensor_name!r} is not numeric: {exc}"
            ) from None
        if arr.ndim == 1 and n == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != n:
            raise PredictionInputError(
                f"input {signature.tensor_name!r} has shape {list(arr.shape)}; expected [rows, {n}]"
            )
        return np.ascontiguousarray(arr)
    cols = [numeric_column(inputs, c.name) for c in signature.inputs]
    rows = _rows(cols, signature)
    out = np.empty((rows, n), dtype=np.float32)
    for j, col in enumerate(cols):
        out[:, j] = col
    return out


def numeric_column(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` as 1-D float32 (``None`` becomes NaN)."""
    raw = _get(inputs, name)
    try:
        arr = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise PredictionInputError(f"column {name!r} is not numeric: {exc}") from None
    return _flat(arr, name)


def string_column(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` as a 1-D object array of ``str``."""
    arr = _flat(np.asarray(_get(inputs, name)), name)
    if arr.dtype.kind == "O" and all(type(v) is str for v in arr):
        return arr
    return arr.astype(str).astype(object)


def _get(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return inputs[name]
    except KeyError:
        raise PredictionInputError(
            f"missing input column {name!r} (got {sorted(inputs)[:20]})"
        ) from None


def _flat(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr.reshape(-1)
    if arr.ndim != 1:
        raise PredictionInputError(
            f"column {name!r} has shape {list(arr.shape)}; expected one value per row"
        )
    return arr


def _rows(cols: list[np.ndarray], signature: Signature) -> int:
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        detail = ", ".join(
            f"{c.name}={len(a)}" for c, a in zip(signature.inputs, cols, strict=True)
        )
        raise PredictionInputError(f"columns have different lengths: {detail}")
    return lengths.pop() if lengths else 0
