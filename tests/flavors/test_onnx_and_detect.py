"""ONNX files kept as they are (checked), and flavor detection from the scanner's format."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import lightgbm as lgb
import numpy as np
import onnx
import pandas as pd
import pytest
import xgboost as xgb
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelcrate.errors import InputError
from modelcrate.flavors import convert, detect_flavor, load_model
from modelcrate.runtime import predictor_from_bytes
from modelcrate.scan import scan_file


def _build(path: Path) -> object:
    fmt = scan_file(path).format
    flavor = detect_flavor(path, fmt)
    model = load_model(path, flavor, fmt)
    return convert(model, flavor, source_path=path, sample=None, signature=None)


def test_onnx_classifier_with_zipmap_is_kept_byte_for_byte(
    tmp_path: Path, numeric: tuple[np.ndarray, ...]
) -> None:
    x, cls, _ = numeric
    model = LogisticRegression().fit(x.astype(np.float32), cls)
    path = tmp_path / "clf.onnx"
    path.write_bytes(to_onnx(model, x[:1].astype(np.float32)).SerializeToString())  # ZipMap on
    c = _build(path)
    assert c.flavor == "onnx"
    assert c.runtime == "onnxruntime"
    assert c.artifacts[0].data == path.read_bytes()  # type: ignore[attr-defined]
    sig = c.signature  # type: ignore[attr-defined]
    assert sig.task == "classification"
    assert sig.classes == ("0", "1", "2")
    assert sig.tensor_input
    assert sig.tensor_name == "X"
    assert len(sig.inputs) == 4
    assert "no other model to compare" in c.parity.details  # type: ignore[attr-defined]
    fresh = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    out = predictor_from_bytes(path.read_bytes(), "onnxruntime", sig).predict({"X": fresh})
    assert list(out["label"]) == [str(v) for v in model.predict(fresh)]
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(fresh), atol=1e-5)


def test_onnx_regressor_and_per_column_string_graph(
    tmp_path: Path, mixed: tuple[pd.DataFrame, np.ndarray], numeric: tuple[np.ndarray, ...]
) -> None:
    x, _, reg = numeric
    path = tmp_path / "reg.onnx"
    lin = LinearRegression().fit(x, reg)
    path.write_bytes(to_onnx(lin, x[:1].astype(np.float32)).SerializeToString())
    c = _build(path)
    assert c.signature.task == "regression"  # type: ignore[attr-defined]
    df, y = mixed
    frame = df.fillna(0.0)
    ct = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                           remainder="passthrough")  # fmt: skip
    pipe = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(frame[["city", "age"]], y)
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    onx = to_onnx(pipe, initial_types=[("city", StringTensorType([None, 1])),
                                       ("age", FloatTensorType([None, 1]))],
                  options={"zipmap": False})  # fmt: skip
    (tmp_path / "cols.onnx").write_bytes(onx.SerializeToString())
    cols = _build(tmp_path / "cols.onnx")
    sig = cols.signature  # type: ignore[attr-defined]
    assert not sig.tensor_input
    assert [(col.name, col.dtype) for col in sig.inputs] == [("city", "string"), ("age", "float32")]
    assert sig.classes == ("churn", "stay")


def test_corrupt_and_invalid_onnx_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk\xff\xff\xff")
    with pytest.raises(InputError, match="ONNX") as err:
        load_model(bad, "onnx", "onnx")
    assert err.value.path == str(bad)
    node = helper.make_node("Add", ["x"], ["y"])  # Add needs two inputs
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )  # fmt: skip
    invalid = tmp_path / "invalid.onnx"
    invalid.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(InputError, match="invalid ONNX model"):
        load_model(invalid, "onnx", "onnx")


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    raw = np.array([1.0, 2.0], np.float32).tobytes()
    weights = helper.make_tensor("w", TensorProto.FLOAT, [2, 1], raw, raw=True)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[weights],
    )  # fmt: skip
    onx = helper.make_model(graph)
    path = tmp_path / "ext.onnx"
    onnx.save_model(onx, path, save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    with pytest.raises(InputError, match="external data") as err:
        load_model(path, "onnx", "onnx")
    assert "save_as_external_data=False" in (err.value.hint or "")


def test_non_tabular_onnx_needs_a_signature(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["img"], ["out"])], "g",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3, 8, 8])],
    )  # fmt: skip
    path = tmp_path / "img.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(InputError, match="tabular graphs only") as err:
        _build(path)
    assert "--signature" in (err.value.hint or "")


def test_detect_flavor_from_scanned_files(tmp_path: Path, numeric: tuple[np.ndarray, ...]) -> None:
    x, cls, _ = numeric
    frame = pd.DataFrame(x, columns=list("abcd"))
    xgbc = xgb.XGBClassifier(n_estimators=2, max_depth=2, n_jobs=1).fit(frame, cls)
    lgbc = lgb.LGBMClassifier(n_estimators=2, verbose=-1, n_jobs=1).fit(frame, cls)
    files = {
        "sk.joblib": lambda p: joblib.dump(LogisticRegression().fit(x, cls), p, compress=3),
        "xgb.pkl": lambda p: p.write_bytes(pickle.dumps(xgbc)),
        "lgb.joblib": lambda p: joblib.dump(lgbc, p, compress=("gzip", 3)),
        "xgb.json": lambda p: xgbc.get_booster().save_model(p),
        "xgb.ubj": lambda p: xgbc.get_booster().save_model(p),
        "lgb.txt": lgbc.booster_.save_model,
    }
    expected = {"sk": "sklearn", "xgb": "xgboost", "lgb": "lightgbm"}
    for name, write in files.items():
        path = tmp_path / name
        write(path)
        fmt = scan_file(path).format
        flavor = detect_flavor(path, fmt)
        assert flavor == expected[name.split(".")[0]], (name, fmt)
        assert load_model(path, flavor, fmt) is not None
    npy = tmp_path / "w.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(InputError, match="cannot build a crate from a 'npy' file") as err:
        detect_flavor(npy, scan_file(npy).format)
    assert "scikit-learn" in (err.value.hint or "")
    with pytest.raises(InputError, match="flavor 'onnx' cannot read a 'joblib-zlib' file"):
        load_model(tmp_path / "sk.joblib", "onnx", "joblib-zlib")
