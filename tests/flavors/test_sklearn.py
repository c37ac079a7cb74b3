"""scikit-learn -> ONNX: one test per estimator family and pipeline kind, parity really run.

Each conversion is also checked independently of the build's own parity step: fresh rows go
through the runtime predictor and through the original estimator.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC

from modelcrate.flavors import Converted, convert
from modelcrate.flavors.parity import ONNX_TOLERANCE
from modelcrate.runtime import predictor_from_bytes

SRC = Path("model.joblib")


def _convert(model: Any, sample: pd.DataFrame | None = None) -> Converted:
    return convert(model, "sklearn", source_path=SRC, sample=sample, signature=None)


def _served(c: Converted, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    art = c.artifacts[0]
    return predictor_from_bytes(art.data, c.runtime, c.signature).predict(inputs)


def _check_numeric(model: Any, x: np.ndarray) -> Converted:
    c = _convert(model)
    assert c.runtime == "onnxruntime"
    assert c.artifacts[0].path == "model/model.onnx"
    assert c.signature.tensor_input
    assert c.signature.tensor_name == "input"
    assert c.parity.passed
    assert c.parity.rows == 200
    fresh = np.random.default_rng(11).normal(size=(64, x.shape[1])).astype(np.float32)
    out = _served(c, {"input": fresh})
    x64 = fresh.astype(np.float64)
    if c.signature.task == "classification":
        assert c.parity.label_agreement == 1.0
        assert c.parity.max_abs_diff <= ONNX_TOLERANCE
        assert list(out["label"]) == [str(v) for v in model.predict(x64)]
        if hasattr(model, "predict_proba"):
            np.testing.assert_allclose(out["probabilities"], model.predict_proba(x64), atol=1e-4)
            assert out["probabilities"].dtype == np.float32
    else:
        np.testing.assert_allclose(out["prediction"], model.predict(x64), rtol=1e-4, atol=1e-3)
    return c


CLASSIFIERS = [
    LogisticRegression(max_iter=200),
    SGDClassifier(loss="log_loss", random_state=0),
    LinearSVC(),
    RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0),
    GradientBoostingClassifier(n_estimators=8, random_state=0),
    HistGradientBoostingClassifier(max_iter=8),
    KNeighborsClassifier(n_neighbors=5),
]
REGRESSORS = [
    LinearRegression(),
    Ridge(),
    RandomForestRegressor(n_estimators=8, max_depth=5, random_state=0),
    GradientBoostingRegressor(n_estimators=8, random_state=0),
    HistGradientBoostingRegressor(max_iter=8),
    KNeighborsRegressor(),
    SVR(),
]


@pytest.mark.parametrize("model", CLASSIFIERS, ids=lambda m: type(m).__name__)
def test_classifier_families(model: Any, numeric: tuple[np.ndarray, ...]) -> None:
    x, cls, _ = numeric
    c = _check_numeric(model.fit(x, cls), x)
    assert c.signature.classes == ("0", "1", "2")
    names = [o.name for o in c.signature.outputs]
    assert names == (["label", "probabilities"] if hasattr(model, "predict_proba") else ["label"])


@pytest.mark.parametrize("model", REGRESSORS, ids=lambda m: type(m).__name__)
def test_regressor_families(model: Any, numeric: tuple[np.ndarray, ...]) -> None:
    x, _, reg = numeric
    c = _check_numeric(model.fit(x, reg), x)
    assert [o.name for o in c.signature.outputs] == ["prediction"]
    assert c.signature.task == "regression"


def test_svc_with_probabilities(numeric: tuple[np.ndarray, ...]) -> None:
    x, cls, _ = numeric
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability=True: deprecated in 1.9
        model = SVC(probability=True, random_state=0).fit(x, cls)
        c = _check_numeric(model, x)
    assert "probabilities" in [o.name for o in c.signature.outputs]


def test_column_transformer_with_strings_imputer_and_onehot(
    mixed: tuple[pd.DataFrame, np.ndarray],
) -> None:
    df, y = mixed
    numeric_steps = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    ct = ColumnTransformer(
        [
            ("num", numeric_steps, ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    model = Pipeline([("prep", ct), ("clf", LogisticRegression())]).fit(df, y)
    c = _convert(model)
    sig = c.signature
    assert not sig.tensor_input
    assert [(col.name, col.dtype) for col in sig.inputs] == [
        ("age", "float32"),
        ("income", "float32"),
        ("city", "string"),
    ]
    assert sig.inputs[2].categories == ("lille", "lyon", "nice", "paris")
    assert sig.classes == ("churn", "stay")
    assert c.parity.passed
    assert c.parity.label_agreement == 1.0
    # fresh rows with an unseen city and missing ages: served == original
    fresh = pd.DataFrame(
        {"age": [np.nan, 20.0, 61.5], "income": [1e4, 3e4, 5e4], "city": ["paris", "rome", "nice"]}
    )
    out = _served(c, {k: fresh[k].to_numpy() for k in fresh.columns})
    assert list(out["label"]) == list(model.predict(fresh))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(fresh), atol=1e-5)


def test_user_sample_drives_parity(mixed: tuple[pd.DataFrame, np.ndarray]) -> None:
    df, y = mixed
    ct = ColumnTransformer(
        [
            ("num", SimpleImputer(), make_column_selector(dtype_include="number")),
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include=object),
            ),
        ]
    )
    model = make_pipeline(ct, RandomForestClassifier(n_estimators=5, random_state=0)).fit(df, y)
    c = _convert(model, sample=df.head(50))
    assert c.parity.rows == 50
    assert "50 sample rows" in c.parity.details
    assert c.parity.passed


def test_numeric_column_transformer_by_name_still_takes_one_tensor(
    mixed: tuple[pd.DataFrame, np.ndarray],
) -> None:
    df, _ = mixed
    frame = df[["age", "income"]].fillna(0.0)
    ct = ColumnTransformer([("s", StandardScaler(), ["income", "age"])])
    model = make_pipeline(ct, Ridge()).fit(frame, frame["age"] * 2 + 1)
    c = _convert(model)
    assert c.signature.tensor_input
    assert c.signature.feature_names == ["age", "income"]
    x = frame.to_numpy(np.float32)[:20]
    out = _served(c, {"input": x})
    np.testing.assert_allclose(out["prediction"], model.predict(frame.head(20)), rtol=1e-5)
    # columns are accepted too, and stacked
    cols = _served(c, {"age": x[:, 0], "income": x[:, 1]})
    np.testing.assert_array_equal(cols["prediction"], out["prediction"])


def test_pipeline_with_xgboost_final_step(mixed: tuple[pd.DataFrame, np.ndarray]) -> None:
    xgb = pytest.importorskip("xgboost")
    df, y = mixed
    ct = ColumnTransformer(
        [("num", "passthrough", ["age", "income"]), ("cat", OneHotEncoder(), ["city"])]
    )
    model = Pipeline([("ct", ct), ("m", xgb.XGBClassifier(n_estimators=5, max_depth=3))])
    model.fit(df, (y == "churn").astype(int))
    c = _convert(model)
    assert c.runtime == "onnxruntime"
    assert c.parity.passed
    assert "onnxmltools" in c.converters


def test_conversion_is_deterministic_across_loads(
    tmp_path: Path, mixed: tuple[pd.DataFrame, np.ndarray], numeric: tuple[np.ndarray, ...]
) -> None:
    import joblib

    from modelcrate.formats import safe_load_joblib

    df, y = mixed
    ct = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            ("cat", OneHotEncoder(), ["city"]),
        ]
    )
    pipe = make_pipeline(ct, LogisticRegression()).fit(df, y)
    x, cls, _ = numeric
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(x, cls)  # has a Scan loop
    for model in (pipe, knn):
        joblib.dump(model, tmp_path / "m.joblib")
        first = _convert(safe_load_joblib(tmp_path / "m.joblib"))
        second = _convert(safe_load_joblib(tmp_path / "m.joblib"))
        assert first.artifacts[0].data == second.artifacts[0].data
        assert first.signature == second.signature
        assert first.parity == second.parity


def test_missing_values_the_graph_cannot_reproduce_are_refused(
    numeric: tuple[np.ndarray, ...],
) -> None:
    """skl2onnx routes NaN differently from scikit-learn's trees: the crate says so and the
    runtime refuses NaN rather than answer differently from the original."""
    from modelcrate.runtime import PredictionInputError

    x, cls, _ = numeric
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, cls)
    c = _convert(model)
    assert c.runtime == "onnxruntime"
    assert c.signature.extra["missing_values"] == "reject"
    assert "rejects them" in c.parity.details
    rows = x[:3].astype(np.float32)
    rows[1, 2] = np.nan
    with pytest.raises(PredictionInputError, match=r"missing values .* \['f2'\]"):
        _served(c, {"input": rows})
    # a pipeline with an imputer is checked with missing values in the parity rows
    imputed = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, cls)
    ci = _convert(imputed)
    assert "missing_values" not in ci.signature.extra
    assert not np.isnan(_served(ci, {"input": rows})["probabilities"]).any()


def test_column_names_that_onnx_sanitises(mixed: tuple[pd.DataFrame, np.ndarray]) -> None:
    """skl2onnx renames inputs such as 'age (years)'; the crate keeps the user's names."""
    df, y = mixed
    frame = df.rename(columns={"age": "age (years)", "city": "home city"}).fillna(30.0)
    ct = ColumnTransformer(
        [
            ("n", StandardScaler(), ["age (years)", "income"]),
            ("c", OneHotEncoder(handle_unknown="ignore"), ["home city"]),
        ]
    )
    model = make_pipeline(ct, LogisticRegression()).fit(frame, y)
    c = _convert(model)
    assert c.signature.feature_names == ["age (years)", "income", "home city"]
    out = _served(c, {k: frame[k].to_numpy()[:5] for k in frame.columns})
    assert list(out["label"]) == list(model.predict(frame.head(5)))
    numeric = make_pipeline(
        ColumnTransformer([("n", StandardScaler(), ["age (years)", "income"])]), Ridge()
    ).fit(frame[["age (years)", "income"]], frame["income"])
    cn = _convert(numeric)
    assert cn.signature.tensor_input
