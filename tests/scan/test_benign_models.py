"""Benign-model regression suite: real models saved by the real libraries must pass the scan.

Every file is built here with scikit-learn, xgboost, lightgbm, torch, numpy, pandas, joblib or
pickle into ``tmp_path`` and scanned with :func:`modelcrate.scan.scan`. A benign model must
yield no finding at HIGH or above; failures print the offending findings. Every pickle and
joblib file must also load through the restricted unpickler (``build`` relies on it), so the
scanner and the loader agree on what ordinary save calls write. Models are kept tiny.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import pathlib
import pickle
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcrate.scan import scan
from modelcrate.scan.findings import Severity

PICKLE_PROTOCOLS = tuple(range(pickle.HIGHEST_PROTOCOL + 1))  # 0-5
JOBLIB_COMPRESSIONS = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4")


def offenders(folder: Path) -> list[str]:
    """Findings at HIGH or above for every file under ``folder``, readable in a failure."""
    report = scan(folder)
    assert report.files, f"nothing was scanned under {folder}"
    return [
        f"{f.severity.name} {f.rule_id} {f.location}: {f.message}"
        for f in report.findings
        if f.severity >= Severity.HIGH
    ]


def refused_by_loader(folder: Path) -> list[str]:
    """Pickle and joblib files under ``folder`` the restricted unpickler does not load."""
    from modelcrate.errors import InputError
    from modelcrate.formats import safe_load_joblib

    refused = []
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".pkl", ".joblib"):
            continue
        try:
            safe_load_joblib(path)  # reads plain pickles too
        except InputError as exc:
            refused.append(f"{path.name}: {exc.message}")
    return refused


def dump_everywhere(obj: object, folder: Path, stem: str) -> None:
    """``obj`` via pickle (protocols 0-5) and joblib (uncompressed and every compression)."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    for proto in PICKLE_PROTOCOLS:
        (folder / f"{stem}.p{proto}.pkl").write_bytes(pickle.dumps(obj, protocol=proto))
    joblib.dump(obj, folder / f"{stem}.joblib")
    for method in JOBLIB_COMPRESSIONS:
        joblib.dump(obj, folder / f"{stem}.{method}.joblib", compress=(method, 3))


def assert_benign(folder: Path) -> None:
    assert offenders(folder) == []
    assert refused_by_loader(folder) == []


# ----------------------------------------------------------------------------- scikit-learn


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)


def _logistic() -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(*_data())


def _random_forest() -> object:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=5, random_state=0).fit(*_data())


def _gradient_boosting() -> object:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=5, random_state=0).fit(*_data())


def _hist_gradient_boosting() -> object:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(*_data())


def _svc_probability() -> object:
    from sklearn.svm import SVC

    return SVC(probability=True, random_state=0).fit(*_data())


def _knn() -> object:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=3).fit(*_data())


def _column_pipeline() -> object:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = _data()
    cat = np.random.default_rng(1).integers(0, 3, size=(len(x), 1))
    mixed = np.hstack([x, cat]).astype(object)
    mixed[0, 1] = np.nan
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    columns = ColumnTransformer(
        [("num", numeric, [0, 1, 2, 3]), ("cat", OneHotEncoder(handle_unknown="ignore"), [4])]
    )
    return Pipeline([("columns", columns), ("clf", LogisticRegression())]).fit(mixed, y)


def _function_transformer_log1p() -> object:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    x, y = _data()
    from sklearn.linear_model import LogisticRegression

    pipe = make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression())
    return pipe.fit(np.abs(x), y)


def _knn_trees() -> object:
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    x, y = _data()
    return [
        KNeighborsClassifier(algorithm="kd_tree").fit(x, y),
        NearestNeighbors(algorithm="ball_tree").fit(x),
    ]


def _hist_gradient_boosting_regressor() -> object:
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, _ = _data()
    return HistGradientBoostingRegressor(max_iter=5, categorical_features=[0]).fit(
        np.abs(x.round()), x[:, 1]
    )


def _text_and_clusters() -> object:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier

    x, y = _data()
    docs = ["alpha beta gamma", "beta gamma delta", "gamma delta alpha"]
    return [
        TfidfVectorizer().fit(docs),
        KMeans(n_clusters=2, n_init=1, random_state=0).fit(x),
        PCA(2).fit(x),
        SGDClassifier(random_state=0).fit(x, y),
    ]


SKLEARN_MODELS: dict[str, Callable[[], object]] = {
    "logistic_regression": _logistic,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "svc_probability": _svc_probability,
    "knn": _knn,
    "column_transformer_pipeline": _column_pipeline,
    "function_transformer_log1p": _function_transformer_log1p,
    "knn_kd_and_ball_trees": _knn_trees,
    "hist_gradient_boosting_regressor": _hist_gradient_boosting_regressor,
    "text_clusters_sgd": _text_and_clusters,
}


@pytest.mark.parametrize("name", sorted(SKLEARN_MODELS))
def test_sklearn_models_pickle_and_joblib(name: str, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    dump_everywhere(SKLEARN_MODELS[name](), tmp_path, name)
    assert_benign(tmp_path)


def test_xgboost_and_lightgbm_sklearn_wrappers(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    x, y = _data()
    xgb = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(x, y)
    lgbm = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    dump_everywhere(xgb, tmp_path, "xgb")
    dump_everywhere(lgbm, tmp_path, "lgbm")
    assert_benign(tmp_path)


# ------------------------------------------------------------------------------------ torch


@pytest.fixture(scope="module")
def torch_net() -> Any:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 4),
        nn.Dropout(0.1),
        nn.LayerNorm(4),
    )


@pytest.fixture(scope="module")
def torch_seq_net() -> Any:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    return nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 4, batch_first=True))


def _torch_save_both(obj: object, folder: Path, stem: str, legacy: bool = True) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(obj, folder / f"{stem}.pt")
    if legacy:
        torch.save(obj, folder / f"{stem}.legacy.pt", _use_new_zipfile_serialization=False)


def test_torch_state_dict_zip_and_legacy(torch_net: Any, tmp_path: Path) -> None:
    import torch

    _torch_save_both(torch_net.state_dict(), tmp_path, "state_dict")
    mixed = {
        "half": torch.zeros(2, dtype=torch.float16),
        "bf16": torch.zeros(2, dtype=torch.bfloat16),
        "long": torch.arange(3),
        "bool": torch.ones(2, dtype=torch.bool),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    _torch_save_both(mixed, tmp_path, "mixed_dtypes")
    _torch_save_both(torch.get_rng_state(), tmp_path, "rng_state")
    assert offenders(tmp_path) == []


def test_torch_tensors_through_plain_pickle(torch_net: Any, tmp_path: Path) -> None:
    """pickle.dumps of a tensor stores its storage as torch.storage._load_from_bytes(b'<a
    legacy torch.save>'): a nested loader on a literal, judged by what the literal holds."""
    import torch

    values = {
        "tensor": torch.arange(6.0).reshape(2, 3),
        "half": torch.zeros(3, dtype=torch.float16),
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "state_dict": torch_net.state_dict(),
        "module": torch.nn.Linear(2, 2),
    }
    for name, value in values.items():
        dump_everywhere(value, tmp_path, name)
    assert_benign(tmp_path)


def test_torch_full_module_zip(torch_net: Any, torch_seq_net: Any, tmp_path: Path) -> None:
    _torch_save_both(torch_net, tmp_path, "full_conv", legacy=False)
    _torch_save_both(torch_seq_net, tmp_path, "full_lstm", legacy=False)
    assert offenders(tmp_path) == []


def test_torch_full_module_legacy(torch_net: Any, torch_seq_net: Any, tmp_path: Path) -> None:
    """Legacy non-zip format: BINPERSID ('module', cls, file, source) stands for the class."""
    import torch

    torch.save(torch_net, tmp_path / "full.legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(torch_seq_net, tmp_path / "seq.legacy.pt", _use_new_zipfile_serialization=False)
    assert offenders(tmp_path) == []


def test_torch_adam_optimizer_state_dict(torch_net: Any, tmp_path: Path) -> None:
    import torch

    net = torch_net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.zeros(2, 1, 4, 6)).sum().backward()
    opt.step()
    _torch_save_both(opt.state_dict(), tmp_path, "optimizer")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    _torch_save_both(sched.state_dict(), tmp_path, "scheduler")
    assert offenders(tmp_path) == []


# ------------------------------------------------------------------------------------ numpy


def test_numpy_arrays_and_random_generators(tmp_path: Path) -> None:
    values: dict[str, object] = {
        "float_array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "int_array": np.arange(5),
        "bool_array": np.array([True, False]),
        "scalars": [np.float64(1.5), np.int64(3), np.bool_(True)],
        "fortran": np.asfortranarray(np.ones((2, 3))),
        "random_state": np.random.RandomState(0),
        "default_rng": np.random.default_rng(0),
        "ufuncs": [np.log1p, np.exp, np.sqrt],
        "dtypes": [np.dtype("f8"), np.dtype([("a", "i4"), ("b", "f4")])],
    }
    for name, value in values.items():
        dump_everywhere(value, tmp_path, name)
    assert_benign(tmp_path)


def test_numpy_subclasses_and_masked_arrays(tmp_path: Path) -> None:
    values = {
        "matrix": np.matrix([[1.0, 2.0]]),
        "masked": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
        "datetime": np.array(["2024-01-01"], dtype="datetime64[D]"),
        "objects": np.array([1, "x", None], dtype=object),
        "records": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "strings": np.array(["a", "bb"], dtype=np.dtypes.StringDType()),
    }
    for name, value in values.items():
        dump_everywhere(value, tmp_path, name)
    assert_benign(tmp_path)


# ----------------------------------------------------------------------------------- pandas


def _frames() -> dict[str, object]:
    import pandas as pd

    df = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "s": ["x", "y", "z"],
            "c": pd.Categorical(["u", "v", "u"]),
            "t": pd.date_range("2024-01-01", periods=3, freq="D"),
            "tz": pd.date_range("2024-01-01", periods=3, tz="UTC"),
            "f": [1.5, None, 2.0],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "d": pd.to_timedelta([1, 2, 3], unit="s"),
        }
    )
    return {
        "frame": df,
        "series": df["f"],
        "multiindex": df.set_index(["i", "s"]),
        "datetime_index": df.set_index("t"),
        "periods": pd.Series(pd.period_range("2024-01", periods=2, freq="M")),
        "intervals": pd.Series(pd.interval_range(0, 3)),
        "sparse": pd.Series(pd.arrays.SparseArray([0, 0, 1])),
        "strings": pd.Series(["a", None], dtype="string"),
        "scalars": [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timedelta("1D"), pd.NaT, pd.NA],
        "offsets": [pd.offsets.MonthEnd(2), pd.offsets.BusinessDay(), pd.offsets.Week(1)],
    }


def test_pandas_frames_and_series(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    for name, value in _frames().items():
        dump_everywhere(value, tmp_path, name)
    assert_benign(tmp_path)


# ---------------------------------------------------------------------------------- stdlib


def test_stdlib_value_types(tmp_path: Path) -> None:
    counts: collections.Counter[str] = collections.Counter("abca")
    value = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 1, 2),
        "clock": datetime.time(3, 4),
        "delta": datetime.timedelta(days=1, seconds=3),
        "price": decimal.Decimal("1.50"),
        "ordered": collections.OrderedDict(a=1, b=2),
        "default": collections.defaultdict(list, a=[1]),
        "queue": collections.deque([1, 2]),
        "counts": counts,
        "args": argparse.Namespace(lr=0.1, epochs=3),
        "pure": pathlib.PurePosixPath("/models/a"),
        "path": pathlib.Path("/models/b"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "builtins": [slice(1, 5, 2), range(3), frozenset({1}), {2}, bytearray(b"x"), 1 + 2j],
    }
    dump_everywhere(value, tmp_path, "metadata")
    assert_benign(tmp_path)


def test_hf_training_args_like_pickle(tmp_path: Path) -> None:
    """A training_args.bin imitation: TrainingArguments rebuilt by NEWOBJ + BUILD, enum members
    by calling their class; written from opcodes because transformers is not a test dependency.
    """
    from tests.scan.picklegen import P, call, glob, lit

    def enum_member(module: str, cls: str, value: str) -> bytes:
        return call(glob(module, cls), lit(value))

    state = (
        P.EMPTY_DICT
        + P.MARK
        + lit("output_dir")
        + lit("out")
        + lit("eval_strategy")
        + enum_member("transformers.trainer_utils", "IntervalStrategy", "steps")
        + lit("lr_scheduler_type")
        + enum_member("transformers.trainer_utils", "SchedulerType", "linear")
        + lit("optim")
        + enum_member("transformers.training_args", "OptimizerNames", "adamw_torch")
        + P.SETITEMS
    )
    body = (
        P.PROTO2
        + glob("transformers.training_args", "TrainingArguments")
        + P.EMPTY_TUPLE
        + P.NEWOBJ
        + state
        + P.BUILD
        + P.STOP
    )
    (tmp_path / "training_args.bin").write_bytes(body)
    assert offenders(tmp_path) == []


@pytest.fixture(autouse=True)
def _quiet_library_warnings() -> Iterator[None]:
    # sklearn/lightgbm may warn about convergence or feature names on tiny data; those are
    # the libraries talking to the model author, not scan results.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
