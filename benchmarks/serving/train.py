"""Train the two benchmark models and write them with a sample row (runs in modelcrate's venv).

``python train.py OUT_DIR`` writes ``rf.joblib``, ``lr.joblib`` and ``models.json``: for each
model its file, the sample row (the first training row) and the label the model itself gives it,
so run.py can check every server's answer before loading it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    x_rf, y_rf = make_classification(n_samples=5000, n_features=30, random_state=0)
    x_lr, y_lr = load_iris(return_X_y=True)
    models = {
        "rf": (RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0), x_rf, y_rf),
        "lr": (LogisticRegression(max_iter=500), x_lr, y_lr),
    }
    info = {}
    for name, (model, x, y) in models.items():
        model.fit(x, y)
        path = out / f"{name}.joblib"
        joblib.dump(model, path)
        row = [float(v) for v in x[0]]
        info[name] = {
            "file": str(path),
            "row": row,
            "label": str(model.predict([row])[0]),
            "model": repr(model),
        }
    (out / "models.json").write_text(json.dumps(info, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
