"""What every flavor returns: the safe artifacts, the signature and the parity evidence.

Plain frozen data; no framework is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError

__all__ = [
    "FLAVORS",
    "ML_OPSET",
    "TARGET_OPSET",
    "Artifact",
    "Converted",
    "Parity",
    "ParityError",
    "UnsupportedModelError",
    "versions",
]

FLAVORS: tuple[str, ...] = ("sklearn", "onnx", "xgboost", "lightgbm")
# One opset for every converter (onnxmltools' xgboost/lightgbm converters stop at 15); every
# ONNX Runtime since 1.10 and Triton's onnxruntime backend run it.
TARGET_OPSET = 15
ML_OPSET = 3


@dataclass(frozen=True)
class Artifact:
    """One file of the crate's ``model/`` folder. ``path`` is crate-relative."""

    path: str  # e.g. "model/model.onnx"
    data: bytes
    format: str  # "onnx" | "xgboost-json" | "lightgbm-text" | "skops"


@dataclass(frozen=True)
class Parity:
    """How closely the converted artifact reproduces the original model on sample rows.

    ``tolerance`` bounds ``max_abs_diff`` (probabilities for classifiers, predictions for
    regressors); ``label_agreement`` is the fraction of rows with the same label (1.0 for
    regressors). ``details`` is a readable report (worst rows when it failed).
    """

    rows: int
    tolerance: float
    max_abs_diff: float
    label_agreement: float
    passed: bool
    details: str


@dataclass(frozen=True)
class Converted:
    """The result of :func:`modelcrate.flavors.convert`."""

    flavor: str
    artifacts: tuple[Artifact, ...]
    signature: Signature
    runtime: str  # "onnxruntime" | "xgboost" | "lightgbm" | "skops"
    opset: int | None
    parity: Parity
    converters: dict[str, str] = field(default_factory=dict)


class ParityError(InputError):
    """The converted model does not reproduce the original within the stated tolerance."""

    code = "parity"

    def __init__(
        self, message: str, *, parity: Parity, path: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.parity = parity


class UnsupportedModelError(InputError):
    """No converter (nor the skops fallback) handles this estimator."""

    code = "unsupported-model"


def versions(*dists: str) -> dict[str, str]:
    """Installed versions of the named distributions (provenance); missing ones are skipped."""
    found: dict[str, str] = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
