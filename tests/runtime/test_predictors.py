"""The serving runtime: load_predictor from a crate folder, inputs/outputs contract, errors,
and the promise that the ONNX path imports no training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors import Converted, convert
from modelcrate.runtime import PredictionInputError, load_predictor


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _crate(tmp_path: Path, c: Converted) -> Path:
    """Lay the converted artifacts out as a crate folder does."""
    root = tmp_path / "crate"
    for art in c.artifacts:
        target = root / art.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(art.data)
    (root / "signature.json").write_text(json.dumps(c.signature.to_dict()))
    return root


@pytest.fixture(scope="module")
def churn() -> tuple[object, pd.DataFrame]:
    rng = np.random.default_rng(4)
    df = pd.DataFrame(
        {
            "tenure": rng.uniform(0, 60, 300),
            "plan": rng.choice(["basic", "pro", "team"], 300),
            "spend": rng.normal(50, 15, 300),
        }
    )
    y = np.where((df["plan"] == "basic") & (df["tenure"] < 20), "leave", "stay")
    ct = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["tenure", "spend"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return make_pipeline(ct, LogisticRegression()).fit(df, y), df


def test_columns_in_labels_and_probabilities_out(
    tmp_path: Path, churn: tuple[object, pd.DataFrame]
) -> None:
    model, df = churn
    c = convert(model, "sklearn", source_path=Path("m"), sample=None, signature=None)
    root = _crate(tmp_path, c)
    sig = Signature.from_dict(json.loads((root / "signature.json").read_text()))
    predictor = load_predictor(root, c.runtime, ["model/model.onnx"], sig)
    assert predictor.signature == sig
    batch = df.head(257)
    inputs = {
        "tenure": batch["tenure"].to_numpy(np.float32),
        "plan": batch["plan"].to_numpy(dtype=object),
        "spend": batch["spend"].to_numpy(),  # float64 and str arrays are accepted too
    }
    out = predictor.predict(inputs)
    assert set(out) == {"label", "probabilities"}
    assert out["label"].dtype == object
    assert set(out["label"]) <= {"leave", "stay"}
    assert out["probabilities"].dtype == np.float32
    assert out["probabilities"].shape == (257, 2)
    assert list(out["label"]) == list(model.predict(batch))  # type: ignore[attr-defined]
    # one row at a time gives the same answers as the batch
    for i in (0, 100, 256):
        one = predictor.predict({k: v[i : i + 1] for k, v in inputs.items()})
        assert one["label"][0] == out["label"][i]
        np.testing.assert_allclose(one["probabilities"][0], out["probabilities"][i], atol=1e-6)
    # str dtype arrays and missing numbers (None -> NaN -> imputed)
    odd = predictor.predict(
        {"tenure": np.array([None, 3.0], dtype=object), "plan": np.array(["pro", "x"]),
         "spend": np.array([1.0, 2.0])}
    )  # fmt: skip
    assert odd["label"].shape == (2,)


def test_tensor_model_takes_a_matrix_or_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    model = RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0).fit(x, x[:, 0] * 3)
    c = convert(model, "sklearn", source_path=Path("m"), sample=None, signature=None)
    p = load_predictor(_crate(tmp_path, c), c.runtime, ["model/model.onnx"], c.signature)
    x32 = x.astype(np.float32)
    tensor = p.predict({"input": x32})["prediction"]
    assert tensor.shape == (100,)
    np.testing.assert_allclose(tensor, model.predict(x32.astype(np.float64)), rtol=1e-5)
    cols = p.predict({"f0": x32[:, 0], "f1": x32[:, 1], "f2": x32[:, 2]})["prediction"]
    np.testing.assert_array_equal(cols, tensor)
    with pytest.raises(PredictionInputError, match=r"shape \[100, 2\]; expected \[rows, 3\]"):
        p.predict({"input": x32[:, :2]})
    with pytest.raises(PredictionInputError, match="missing input column 'f2'"):
        p.predict({"f0": x32[:, 0], "f1": x32[:, 1]})
    with pytest.raises(PredictionInputError, match="'f1' is not numeric"):
        p.predict({"f0": x32[:2, 0], "f1": np.array(["a", "b"]), "f2": x32[:2, 2]})
    with pytest.raises(PredictionInputError, match="different lengths"):
        p.predict({"f0": x32[:3, 0], "f1": x32[:2, 1], "f2": x32[:2, 2]})


def test_crate_problems_are_input_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    c = convert(LogisticRegression().fit(x, x[:, 0] > 0), "sklearn", source_path=Path("m"),
                sample=None, signature=None)  # fmt: skip
    root = _crate(tmp_path, c)
    with pytest.raises(InputError, match="leaves the crate folder"):
        load_predictor(root, "onnxruntime", ["model/../../etc/passwd"], c.signature)
    with pytest.raises(InputError, match="cannot read the model artifact"):
        load_predictor(root, "onnxruntime", ["model/missing.onnx"], c.signature)
    with pytest.raises(InputError, match="no model artifact"):
        load_predictor(root, "onnxruntime", ["scan.json"], c.signature)
    with pytest.raises(InputError, match="unknown runtime 'torch'"):
        load_predictor(root, "torch", ["model/model.onnx"], c.signature)
    wrong = replace(c.signature, tensor_name="features")
    with pytest.raises(InputError, match="one input named 'features'"):
        load_predictor(root, "onnxruntime", ["model/model.onnx"], wrong)


def test_native_predictors_load_from_a_crate(tmp_path: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x[:, 0] > 0.2).astype(int)
    booster = xgb.train(
        {"objective": "multi:softmax", "num_class": 2, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=3,
    )
    c = convert(booster, "xgboost", source_path=Path("m"), sample=None, signature=None)
    assert c.runtime == "xgboost"
    p = load_predictor(_crate(tmp_path / "x", c), "xgboost", ["model/model.json"], c.signature)
    out = p.predict({"input": x})
    assert list(out["label"]) == [str(int(v)) for v in booster.predict(xgb.DMatrix(x))]
    lgbm = lgb.LGBMClassifier(n_estimators=4, verbose=-1, n_jobs=1).fit(x, y == 1)
    c2 = convert(lgbm, "lightgbm", source_path=Path("m"), sample=None, signature=None)
    assert c2.runtime == "lightgbm"
    p2 = load_predictor(_crate(tmp_path / "l", c2), "lightgbm", ["model/model.txt"], c2.signature)
    out2 = p2.predict({"input": x})
    assert list(out2["label"]) == [str(v) for v in lgbm.predict(x)]
    np.testing.assert_allclose(out2["probabilities"], lgbm.predict_proba(x), atol=1e-6)


def test_onnx_runtime_path_imports_no_training_stack(
    tmp_path: Path, churn: tuple[object, pd.DataFrame]
) -> None:
    model, _ = churn
    c = convert(model, "sklearn", source_path=Path("m"), sample=None, signature=None)
    root = _crate(tmp_path, c)
    script = f"""
import json, sys
from pathlib import Path
import numpy as np
from modelcrate.crate.signature import Signature
from modelcrate.runtime import load_predictor
root = Path({str(root)!r})
sig = Signature.from_dict(json.loads((root / "signature.json").read_text()))
p = load_predictor(root, "onnxruntime", ["model/model.onnx"], sig)
out = p.predict({{"tenure": np.array([1.0]), "plan": np.array(["pro"], object),
                 "spend": np.array([3.0])}})
heavy = sorted(m for m in ("sklearn", "skl2onnx", "onnxmltools", "pandas", "onnx", "xgboost",
                           "lightgbm", "skops", "torch") if m in sys.modules)
print(json.dumps({{"label": str(out["label"][0]), "heavy": heavy}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["label"] in ("leave", "stay")
