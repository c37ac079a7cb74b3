"""XGBoost and LightGBM: sklearn wrappers and native boosters, ONNX or native, parity run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from modelcrate.flavors import Converted, convert, load_model
from modelcrate.flavors.parity import NATIVE_TOLERANCE, ONNX_TOLERANCE
from modelcrate.runtime import predictor_from_bytes

SRC = Path("model.bin")


@pytest.fixture(scope="module")
def frame(numeric: tuple[np.ndarray, ...]) -> pd.DataFrame:
    x, _, _ = numeric
    return pd.DataFrame(x.astype(np.float32), columns=["a", "b", "c", "d"])


def _served(c: Converted, x: np.ndarray) -> dict[str, np.ndarray]:
    art = c.artifacts[0]
    return predictor_from_bytes(art.data, c.runtime, c.signature).predict(
        {c.signature.tensor_name: x}
    )


def _check(c: Converted, model: Any, x: np.ndarray) -> None:
    """Served predictions on fresh rows equal the original model's."""
    assert c.parity.passed
    out = _served(c, x)
    frame = pd.DataFrame(x, columns=c.signature.feature_names)
    if c.signature.task == "classification":
        assert list(out["label"]) == [str(v) for v in model.predict(frame)]
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame), atol=1e-5)
    else:
        np.testing.assert_allclose(out["prediction"], model.predict(frame), rtol=1e-5, atol=1e-4)


def _fresh(n: int = 50) -> np.ndarray:
    x = np.random.default_rng(5).normal(size=(n, 4)).astype(np.float32)
    x[::7, 1] = np.nan  # boosters route missing values natively: the conversion must too
    return x


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_xgboost_sklearn_wrappers_convert_to_onnx(
    task: str, frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    _, cls, reg = numeric
    if task == "regression":
        model: Any = xgb.XGBRegressor(n_estimators=6, max_depth=3, n_jobs=1).fit(frame, reg)
    else:
        y = (cls > 0).astype(int) if task == "binary" else cls
        model = xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1).fit(frame, y)
    c = convert(model, "xgboost", source_path=SRC, sample=None, signature=None)
    assert c.flavor == "xgboost"
    assert c.runtime == "onnxruntime"
    assert c.signature.feature_names == ["a", "b", "c", "d"]
    assert c.signature.tensor_input
    assert c.parity.max_abs_diff <= ONNX_TOLERANCE
    _check(c, model, _fresh())
    again = convert(model, "xgboost", source_path=SRC, sample=None, signature=None)
    assert again.artifacts[0].data == c.artifacts[0].data


def test_native_xgboost_json_and_ubj_boosters(
    tmp_path: Path, frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    _, cls, _ = numeric
    model = xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1).fit(frame, cls)
    for suffix, fmt in ((".json", "xgboost-json"), (".ubj", "unknown")):
        path = tmp_path / f"model{suffix}"
        model.get_booster().save_model(path)
        booster = load_model(path, "xgboost", fmt)
        assert isinstance(booster, xgb.Booster)
        c = convert(booster, "xgboost", source_path=path, sample=None, signature=None)
        assert c.signature.classes == ("0", "1", "2")
        assert c.parity.passed
        out = _served(c, _fresh())
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(_fresh()), atol=1e-5)


def test_xgboost_softmax_objective_is_served_natively(
    frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    _, cls, _ = numeric
    booster = xgb.train(
        {"objective": "multi:softmax", "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(frame, label=cls),
        num_boost_round=4,
    )
    c = convert(booster, "xgboost", source_path=SRC, sample=None, signature=None)
    assert c.runtime == "xgboost"
    assert c.artifacts[0].format == "xgboost-json"
    assert c.parity.max_abs_diff <= NATIVE_TOLERANCE
    assert "kept xgboost-json because" in c.parity.details
    out = _served(c, _fresh())
    labels = booster.predict(xgb.DMatrix(pd.DataFrame(_fresh(), columns=list("abcd"))))
    assert list(out["label"]) == [str(int(v)) for v in labels]


@pytest.mark.parametrize("labels", ["strings", "regression"])
def test_lightgbm_sklearn_wrappers_convert_to_onnx(
    labels: str, frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    _, cls, reg = numeric
    if labels == "regression":
        model: Any = lgb.LGBMRegressor(n_estimators=6, verbose=-1, n_jobs=1).fit(frame, reg)
    else:
        y = np.array(["low", "mid", "high"])[cls]
        model = lgb.LGBMClassifier(n_estimators=6, verbose=-1, n_jobs=1).fit(frame, y)
    c = convert(model, "lightgbm", source_path=SRC, sample=None, signature=None)
    assert c.runtime == "onnxruntime"
    assert c.flavor == "lightgbm"
    if labels == "strings":
        assert c.signature.classes == ("high", "low", "mid")
    _check(c, model, _fresh())


def test_lightgbm_bool_labels_fall_back_to_native_text(
    frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    """onnxmltools cannot convert boolean class labels: LightGBM's text format is kept."""
    _, cls, _ = numeric
    model = lgb.LGBMClassifier(n_estimators=6, verbose=-1, n_jobs=1).fit(frame, cls > 0)
    c = convert(model, "lightgbm", source_path=SRC, sample=None, signature=None)
    assert c.runtime == "lightgbm"
    assert c.artifacts[0].path == "model/model.txt"
    assert c.signature.classes == ("False", "True")
    assert c.parity.max_abs_diff <= NATIVE_TOLERANCE
    _check(c, model, _fresh())


def test_native_lightgbm_text_booster(
    tmp_path: Path, frame: pd.DataFrame, numeric: tuple[np.ndarray, ...]
) -> None:
    _, _, reg = numeric
    model = lgb.LGBMRegressor(n_estimators=6, verbose=-1, n_jobs=1).fit(frame, reg)
    path = tmp_path / "model.txt"
    model.booster_.save_model(path)
    booster = load_model(path, "lightgbm", "lightgbm-text")
    c = convert(booster, "lightgbm", source_path=path, sample=None, signature=None)
    assert c.signature.task == "regression"
    assert c.signature.feature_names == list("abcd")
    assert c.parity.passed
    np.testing.assert_allclose(
        _served(c, _fresh())["prediction"],
        model.predict(pd.DataFrame(_fresh(), columns=list("abcd"))),
        rtol=1e-5,
        atol=1e-4,
    )
