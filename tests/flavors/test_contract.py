"""Signatures (derived, overridden, refused), parity failures, unsupported estimators, skops."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelcrate.crate.signature import Column, Signature
from modelcrate.errors import InputError
from modelcrate.flavors import ParityError, UnsupportedModelError, convert
from modelcrate.flavors import sklearn as sk_flavor
from modelcrate.flavors.parity import SampleRows, compare
from modelcrate.runtime import predictor_from_bytes

SRC = Path("model.pkl")


class Doubler(RegressorMixin, BaseEstimator):
    """A custom estimator: no converter knows it and the allowlist does not admit it."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 0] * 2


@pytest.fixture(scope="module")
def pipeline(mixed: tuple[pd.DataFrame, np.ndarray]) -> object:
    df, y = mixed
    ct = ColumnTransformer(
        [
            ("num", make_pipeline(StandardScaler()), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    return make_pipeline(ct, LogisticRegression()).fit(df.fillna(40.0), y)


def _derived(model: object) -> Signature:
    return convert(model, "sklearn", source_path=SRC, sample=None, signature=None).signature


def test_signature_override_wrong_column_count_is_refused(pipeline: object) -> None:
    sig = _derived(pipeline)
    user = replace(sig, inputs=sig.inputs[:2])
    with pytest.raises(InputError, match="2 input columns, the model takes 3") as err:
        convert(pipeline, "sklearn", source_path=SRC, sample=None, signature=user)
    assert err.value.path == str(SRC)
    assert "age, income, city" in (err.value.hint or "")


def test_signature_override_wrong_name_or_kind_is_refused(pipeline: object) -> None:
    sig = _derived(pipeline)
    renamed = replace(sig, inputs=(Column("years", "float32"), *sig.inputs[1:]))
    with pytest.raises(InputError, match="'years', the model calls it 'age'"):
        convert(pipeline, "sklearn", source_path=SRC, sample=None, signature=renamed)
    numeric_city = replace(sig, inputs=(*sig.inputs[:2], Column("city", "float32")))
    with pytest.raises(InputError, match="column 'city' is float32, the model reads it as string"):
        convert(pipeline, "sklearn", source_path=SRC, sample=None, signature=numeric_city)
    wrong_classes = replace(sig, classes=("yes", "no"))
    with pytest.raises(InputError, match="classes"):
        convert(pipeline, "sklearn", source_path=SRC, sample=None, signature=wrong_classes)


def test_signature_override_may_name_columns_of_an_unnamed_model(
    numeric: tuple[np.ndarray, ...],
) -> None:
    x, cls, _ = numeric
    model = LogisticRegression().fit(x, cls)
    sig = _derived(model)
    assert sig.feature_names == ["f0", "f1", "f2", "f3"]
    named = replace(sig, inputs=tuple(Column(n, "float32") for n in "abcd"))
    c = convert(model, "sklearn", source_path=SRC, sample=None, signature=named)
    assert c.signature.feature_names == ["a", "b", "c", "d"]
    out = predictor_from_bytes(c.artifacts[0].data, c.runtime, c.signature).predict(
        {n: x[:5, i] for i, n in enumerate("abcd")}
    )
    assert list(out["label"]) == [str(v) for v in model.predict(x[:5])]


def test_sample_missing_a_column_is_an_input_error(
    pipeline: object, mixed: tuple[pd.DataFrame, np.ndarray]
) -> None:
    df, _ = mixed
    with pytest.raises(InputError, match=r"sample lacks the model's columns \['city'\]"):
        convert(pipeline, "sklearn", source_path=SRC, sample=df[["age", "income"]], signature=None)


def test_parity_failure_raises_with_a_readable_report(
    pipeline: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sk_flavor.reference_outputs

    def skewed(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        proba = out["probabilities"].copy()
        proba[3] = proba[3][::-1]  # row 3 now disagrees, by a lot
        out["probabilities"] = proba
        out["label"] = out["label"].copy()
        out["label"][3] = "churn" if out["label"][3] == "stay" else "stay"
        return out

    monkeypatch.setattr(sk_flavor, "reference_outputs", skewed)
    with pytest.raises(ParityError) as err:
        convert(pipeline, "sklearn", source_path=SRC, sample=None, signature=None)
    exc = err.value
    assert isinstance(exc, InputError)
    assert exc.exit_code == 2
    assert not exc.parity.passed
    assert exc.parity.label_agreement == pytest.approx(199 / 200)
    assert exc.parity.max_abs_diff > 0.01
    report = exc.parity.details
    assert "worst rows:" in report
    assert report.splitlines()[2].startswith("  row 3:")
    assert "city=" in report
    assert "label original=" in report
    assert "tolerance 0.0001" in exc.message


def test_label_differences_at_exact_ties_are_tolerated() -> None:
    sig = Signature(inputs=(Column("x", "float32"),), outputs=(), task="classification",
                    classes=("a", "b"))  # fmt: skip
    rows = SampleRows({"x": np.zeros(2, np.float32)}, 2, "synthesized")
    ref = {"label": np.array(["a", "b"], object),
           "probabilities": np.array([[0.5, 0.5], [0.1, 0.9]])}  # fmt: skip
    got = {"label": np.array(["b", "b"], object),
           "probabilities": np.array([[0.5, 0.5], [0.1, 0.9]], np.float32)}  # fmt: skip
    parity = compare(sig, ref, got, rows, tolerance=1e-4, path="m")
    assert parity.passed
    assert parity.label_agreement == 0.5
    assert "1 differ at exact ties" in parity.details


def test_regression_tolerance_scales_with_the_predictions() -> None:
    sig = Signature(inputs=(Column("x", "float32"),), outputs=(), task="regression")
    rows = SampleRows({"x": np.zeros(3, np.float32)}, 3, "synthesized")
    ref = {"prediction": np.array([1000.0, 2000.0, 3000.0])}
    assert compare(sig, ref, {"prediction": ref["prediction"] + 0.2}, rows, tolerance=1e-4,
                   path="m").passed  # fmt: skip
    with pytest.raises(ParityError, match=r"tolerance 0\.3"):
        compare(sig, ref, {"prediction": ref["prediction"] + 0.5}, rows, tolerance=1e-4, path="m")


def test_unsupported_estimator_error_names_it(numeric: tuple[np.ndarray, ...]) -> None:
    x, _, reg = numeric
    model = Doubler().fit(x, reg)
    with pytest.raises(UnsupportedModelError) as err:
        convert(model, "sklearn", source_path=SRC, sample=None, signature=None)
    msg = err.value.message
    assert msg.startswith("Doubler is not supported")
    assert "skl2onnx" in msg
    assert f"{__name__}.Doubler" in msg
    assert err.value.exit_code == 2
    assert err.value.hint


def test_not_an_estimator_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not a fitted scikit-learn estimator"):
        convert({"weights": [1, 2]}, "sklearn", source_path=SRC, sample=None, signature=None)


def test_skops_fallback_for_an_estimator_without_converter(
    numeric: tuple[np.ndarray, ...],
) -> None:
    x, _, reg = numeric
    model = KernelRidge(alpha=1.0).fit(x[:80], reg[:80])
    first = convert(model, "sklearn", source_path=SRC, sample=None, signature=None)
    assert first.runtime == "skops"
    assert first.opset is None
    assert first.artifacts[0].path == "model/model.skops"
    assert first.parity.passed
    assert first.parity.max_abs_diff < 1e-9
    assert "skl2onnx" in first.signature.extra["conversion"]
    second = convert(model, "sklearn", source_path=SRC, sample=None, signature=None)
    assert first.artifacts[0].data == second.artifacts[0].data  # normalised archive
    out = predictor_from_bytes(first.artifacts[0].data, "skops", first.signature).predict(
        {"input": x[:7].astype(np.float32)}
    )
    np.testing.assert_allclose(out["prediction"], model.predict(x[:7].astype(np.float32)))


def test_sample_with_missing_values_the_graph_mishandles_falls_back_to_skops(
    numeric: tuple[np.ndarray, ...],
) -> None:
    from sklearn.ensemble import RandomForestRegressor

    x, _, reg = numeric
    frame = pd.DataFrame(x, columns=list("abcd"))
    frame = frame.mask(np.random.default_rng(0).random(frame.shape) < 0.15)
    model = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(frame, reg)
    c = convert(model, "sklearn", source_path=SRC, sample=frame, signature=None)
    assert c.runtime == "skops"
    assert c.parity.passed
    assert c.parity.rows == len(frame)
    assert "kept skops because the ONNX graph does not reproduce" in c.parity.details
