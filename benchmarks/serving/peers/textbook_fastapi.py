"""The textbook service: FastAPI + a Pydantic request model + ``joblib.load``.

What a tutorial writes: the pickle is loaded at import, ``POST /predict`` takes
``{"features": [...]}`` (one row) and answers the label and the class probabilities (one
``predict_proba`` call, the same output as modelcrate's typed ``/predict``).
``BENCH_MODEL=model.joblib uvicorn textbook_fastapi:app``.
"""

import os

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["BENCH_MODEL"])
app = FastAPI()


class Features(BaseModel):
    features: list[float]


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(item: Features) -> Prediction:
    proba = model.predict_proba(np.asarray([item.features]))[0]
    classes = [str(c) for c in model.classes_]
    return Prediction(
        label=classes[int(proba.argmax())],
        probabilities={c: float(p) for c, p in zip(classes, proba, strict=True)},
    )
