"""Which flavor a model file is, and loading it safely (never plain ``pickle``/``joblib``)."""

from __future__ import annotations

import io
import pickletools
from pathlib import Path
from typing import Any

from modelcrate.errors import InputError
from modelcrate.flavors.base import FLAVORS
from modelcrate.scan.policy import Policy

__all__ = ["PICKLE_FORMATS", "detect_flavor", "load_model"]

PICKLE_FORMATS = frozenset(
    {"pickle", "joblib", "joblib-zlib", "joblib-gzip", "joblib-bz2", "joblib-xz",
     "joblib-lzma", "joblib-lz4"}
)  # fmt: skip
_XGBOOST_FORMATS = frozenset({"xgboost-json", "xgboost-ubj"})
_PEEK_BYTES = 1 << 16
_SUPPORTED = (
    "scikit-learn (pickle/joblib), ONNX, XGBoost (JSON/UBJ/pickle) and LightGBM (text/pickle)"
)


def detect_flavor(path: Path, scan_format: str) -> str:
    """The flavor of a scanned model file; :class:`InputError` when unsupported."""
    if scan_format == "onnx":
        return "onnx"
    if scan_format in _XGBOOST_FORMATS or _is_ubj(path, scan_format):
        return "xgboost"
    if scan_format == "lightgbm-text":
        return "lightgbm"
    if scan_format in PICKLE_FORMATS:
        root = _first_global_root(path)
        return root if root in ("xgboost", "lightgbm") else "sklearn"
    raise InputError(
        f"cannot build a crate from a {scan_format!r} file",
        path=str(path),
        hint=f"modelcrate build supports {_SUPPORTED}",
    )


def load_model(path: Path, flavor: str, scan_format: str, *, policy: Policy | None = None) -> Any:
    """Load the model object for ``flavor``; pickles only through the restricted unpickler.

    ``policy`` admits the extra globals the scan admitted (the user's policy file).
    """
    if flavor not in FLAVORS:
        raise InputError(f"unknown flavor {flavor!r}", hint=f"use one of: {', '.join(FLAVORS)}")
    if scan_format in PICKLE_FORMATS and flavor != "onnx":
        from modelcrate.formats import safe_load_joblib

        return safe_load_joblib(path, policy=policy)
    if flavor == "onnx" and scan_format == "onnx":
        from modelcrate.flavors.onnx import load_onnx

        return load_onnx(path)
    if flavor == "xgboost" and (scan_format in _XGBOOST_FORMATS or _is_ubj(path, scan_format)):
        from modelcrate.flavors.xgboost import load_xgboost

        return load_xgboost(path)
    if flavor == "lightgbm" and scan_format == "lightgbm-text":
        from modelcrate.flavors.lightgbm import load_lightgbm

        return load_lightgbm(path)
    raise InputError(
        f"flavor {flavor!r} cannot read a {scan_format!r} file",
        path=str(path),
        hint="use --flavor auto, or the flavor that matches the file "
        f"(modelcrate build supports {_SUPPORTED})",
    )


def _is_ubj(path: Path, scan_format: str) -> bool:
    """XGBoost UBJSON: the scanner has no name for it; ``.ubj`` holding a UBJSON object."""
    if scan_format not in ("unknown", "json") or path.suffix.lower() != ".ubj":
        return False
    try:
        with path.open("rb") as fh:
            return fh.read(1) == b"{"
    except OSError:
        return False


def _first_global_root(path: Path) -> str | None:
    """The top-level package of the first global the pickle stream imports (its top object's
    class), read statically: nothing is imported or executed."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    try:
        with (
            path.open("rb") as fh,
            _validate_fileobject_and_memmap(fh, str(path), None) as (
                fobj,
                _,
            ),
        ):
            if isinstance(fobj, str):
                return None
            head = fobj.read(_PEEK_BYTES)
    except (OSError, ValueError, EOFError):
        return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                return arg.split(" ", 1)[0].split(".", 1)[0]
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return strings[-2].split(".", 1)[0]
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
    except (ValueError, EOFError):
        return None
    return None
