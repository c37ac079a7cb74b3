"""Serving a crate: the FastAPI app (typed ``/predict``, Open Inference Protocol V2, health,
metrics) and in-process predictions through the same conversion path.

Importing this package loads the serving stack (FastAPI, NumPy); the CLI imports it lazily.
"""

from modelcrate.serve.app import build_app, create_app, create_app_from_env
from modelcrate.serve.codec import Codec, PredictionFailed
from modelcrate.serve.local import LocalPredictions, predict_file
from modelcrate.serve.model import ModelInfo, open_predictor, read_model_info

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
