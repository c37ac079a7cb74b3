"""The BentoML 1.4 service: one ``@bentoml.service`` class, one ``@bentoml.api`` method.

The pickle is loaded with ``joblib.load`` in ``__init__`` (BentoML's documented pattern for a
model file outside its model store); ``POST /predict`` takes ``{"features": [[...]]}`` and answers
the label and class probabilities of each row (one ``predict_proba`` call).
``BENCH_MODEL=model.joblib bentoml serve bentoml_service:Classifier``.
"""

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])
        self.classes = [str(c) for c in self.model.classes_]

    @bentoml.api
    def predict(self, features: list[list[float]]) -> list[dict[str, object]]:
        proba = self.model.predict_proba(np.asarray(features))
        return [
            {
                "label": self.classes[int(row.argmax())],
                "probabilities": {c: float(p) for c, p in zip(self.classes, row, strict=True)},
            }
            for row in proba
        ]
