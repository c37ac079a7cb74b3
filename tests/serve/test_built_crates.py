"""Crates made by ``modelcrate build`` from models people have, served: the answers of
``/predict``, V2 and ``modelcrate predict`` equal the original model's."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelcrate.crate.build import build
from modelcrate.crate.lockfile import lock_request
from modelcrate.crate.store import Store
from modelcrate.serve import create_app, predict_file
from tests.serve.asgi import AppClient

LOCK = b"# requirements.lock (test)\nnumpy==2.0.0 \\\n    --hash=sha256:" + b"0" * 64 + b"\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store whose lock cache holds every runtime's lock: building needs no network."""
    s = Store(tmp_path_factory.mktemp("store"))
    s.locks_dir.mkdir(parents=True)
    for runtime in ("onnxruntime", "xgboost", "lightgbm"):
        (s.locks_dir / f"{lock_request(runtime, '3.11').key()}.lock").write_bytes(LOCK)
    return s


def _frame() -> Any:
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame(
        {
            "tenure": rng.uniform(0, 72, n),
            "charges": rng.normal(70, 20, n),
            "contract": rng.choice(["monthly", "yearly", "two-year"], n),
        }
    )
    target = np.where((frame["tenure"] < 20) & (frame["contract"] == "monthly"), "churn", "stay")
    return frame, target


def _served(crate_dir: Path, frame: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``/predict`` answers for the rows of ``frame`` and the V2 model metadata."""
    recs = [
        {k: (v if isinstance(v, str) else float(v)) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    with AppClient(create_app(crate_dir)) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/predict", json=recs)
        assert response.status_code == 200, response.text
        name = client.get("/").json()["name"]
        meta = client.get(f"/v2/models/{name}").json()
    return response.json(), meta


def test_sklearn_pipeline_with_a_string_column(store: Store, tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, target = _frame()
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["tenure", "charges"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
                    ]
                ),
            ),
            ("clf", RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0)),
        ]
    ).fit(frame, target)
    path = tmp_path / "churn.pkl"
    path.write_bytes(pickle.dumps(model, protocol=4))
    built = build(path, name="churn", store=store)

    rows = frame.iloc[:50]
    predictions, meta = _served(built.path, rows)
    assert [p["label"] for p in predictions] == list(model.predict(rows))
    classes = list(model.classes_)
    got = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
    np.testing.assert_allclose(got, model.predict_proba(rows), atol=1e-4)
    assert {t["name"]: t["datatype"] for t in meta["inputs"]}["contract"] == "BYTES"

    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    local = predict_file(built.path, source)
    assert [p["label"] for p in local.predictions] == [p["label"] for p in predictions]


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_boosters(store: Store, tmp_path: Path, framework: str) -> None:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = x[:200, :6], y[:200]
    if framework == "xgboost":
        import xgboost as xgb

        model: Any = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y)
        path = tmp_path / "model.json"
        model.save_model(path)
    else:
        import lightgbm as lgb

        model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(x, y)
        path = tmp_path / "model.txt"
        model.booster_.save_model(path)
    built = build(path, name=f"bc-{framework}", store=store)
    sig = built.manifest.signature_obj()
    assert sig.tensor_input  # purely numeric: one FP32 tensor on V2

    with AppClient(create_app(built.path)) as client:
        tensor = {"name": sig.tensor_name, "shape": [20, 6], "datatype": "FP32"}
        body = {"inputs": [tensor | {"data": x[:20].astype(np.float32).ravel().tolist()}]}
        response = client.post(f"/v2/models/{built.name}/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        records = [dict(zip(sig.feature_names, map(float, row), strict=True)) for row in x[:20]]
        typed = client.post("/predict", content=orjson.dumps(records)).json()
    probs = np.array(outputs["probabilities"]["data"]).reshape(20, 2)
    np.testing.assert_allclose(probs, model.predict_proba(x[:20]), atol=1e-4)
    assert [str(v) for v in model.predict(x[:20])] == outputs["label"]["data"]
    assert [p["label"] for p in typed] == outputs["label"]["data"]
