"""Raw model outputs -> the contract's outputs: ``label`` strings, ``probabilities`` float32
``[rows, classes]``, ``prediction`` 1-D (or ``[rows, targets]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelcrate.crate.signature import Signature

__all__ = ["labels_from_index", "labels_from_values", "prediction", "probabilities"]


def labels_from_values(values: Any) -> np.ndarray:
    """Class values as the model emits them (int64, str, float) -> object array of str."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind == "O" and all(type(v) is str for v in arr):
        return arr
    if len(arr) > 16 and arr.dtype.kind in "iuf":  # few classes, many rows: convert each once
        unique, index = np.unique(arr, return_inverse=True)
        return unique.astype(str).astype(object)[index]
    return arr.astype(str).astype(object)


def labels_from_index(index: np.ndarray, signature: Signature) -> np.ndarray:
    """Class indices -> the signature's class labels."""
    classes = np.asarray(signature.classes or (), dtype=object)
    return classes[np.asarray(index, dtype=np.intp)]


def probabilities(values: Any, signature: Signature) -> np.ndarray:
    """Probabilities as float32 ``[rows, classes]``.

    Accepts a ZipMap output (a list of ``{class: p}``), or one column of positive-class
    probabilities for a binary model.
    """
    if isinstance(values, list):
        if not values:
            return np.zeros((0, len(signature.classes or ())), dtype=np.float32)
        keys = list(values[0])
        return np.array([[row[k] for k in keys] for row in values], dtype=np.float32)
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim == 1:
        arr = np.stack([1.0 - arr, arr], axis=1)
    return arr


def prediction(values: Any, signature: Signature, name: str = "prediction") -> np.ndarray:
    """Regression output: 1-D when the signature's output is a scalar per row."""
    arr = np.asarray(values)
    shape = next((o.shape for o in signature.outputs if o.name == name), ())
    if shape == () and arr.ndim == 2 and arr.shape[1] == 1:
        return arr.reshape(-1)
    return arr
