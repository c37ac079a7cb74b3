"""Serving a crate: the ASGI app (typed ``/predict``, Open Inference Protocol V2, KServe V1,
health, metrics; FastAPI only for the documentation) and in-process predictions through the
same conversion path.

The names below load on first use, so that importing a submodule (the server's hot path)
does not import the rest of the serving stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Codec": "modelcrate.serve.codec",
    "PredictionFailed": "modelcrate.serve.codec",
    "LocalPredictions": "modelcrate.serve.local",
    "predict_file": "modelcrate.serve.local",
    "ModelInfo": "modelcrate.serve.model",
    "open_predictor": "modelcrate.serve.model",
    "read_model_info": "modelcrate.serve.model",
    "build_app": "modelcrate.serve.app",
    "create_app": "modelcrate.serve.app",
    "create_app_from_env": "modelcrate.serve.app",
}

__all__ = [
    "Codec",
    "LocalPredictions",
    "ModelInfo",
    "PredictionFailed",
    "build_app",
    "create_app",
    "create_app_from_env",
    "open_predictor",
    "predict_file",
    "read_model_info",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelcrate.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
