"""build(): scan gate, safe load, convert, parity, signature, lock, atomic write; bad input."""

from __future__ import annotations

import errno
import json
import pickle
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcrate.crate import build as build_mod
from modelcrate.crate import lockfile
from modelcrate.crate.build import STEPS, build
from modelcrate.crate.errors import CorruptModel, ScanFailed, StoreError
from modelcrate.crate.layout import verify_crate
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from tests.crate.helpers import FEATURES, iris_onnx_bytes, snapshot


@pytest.fixture(scope="module")
def iris_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = tmp_path_factory.mktemp("models") / "Iris Model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=4))
    return path


@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "iris.onnx"
    path.write_bytes(iris_onnx_bytes())
    return path


@pytest.fixture(scope="module")
def pipeline_joblib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline people really ship: numeric + categorical columns, scaler, one-hot, forest."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, 200),
            "income": rng.normal(50_000, 8_000, 200),
            "city": rng.choice(["paris", "lyon", "nice"], 200),
        }
    )
    y = (df["age"] > 40).map({True: "yes", False: "no"})
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]),
                ["age", "income"],
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    model = Pipeline(
        [("pre", pre), ("clf", RandomForestClassifier(n_estimators=5, random_state=0))]
    )
    model.fit(df, y)
    path = tmp_path_factory.mktemp("models") / "churn.joblib"
    joblib.dump(model, path)
    return path


def test_build_sklearn_pickle(iris_pickle: Path, store: Store) -> None:
    seen: list[str] = []
    start = time.perf_counter()
    built = build(iris_pickle, store=store, progress=seen.append)
    elapsed = time.perf_counter() - start
    assert seen == list(STEPS)
    assert [s for s, _ in built.steps] == list(STEPS)
    m = built.manifest
    assert m.name == "iris-model"  # derived from "Iris Model.pkl"
    assert m.flavor == "sklearn"
    assert m.runtime.kind == "onnxruntime"
    assert m.source.path == "Iris Model.pkl"
    assert m.source.format == "pickle"
    assert [a.path for a in m.artifacts] == ["model/model.onnx"]
    assert m.parity.passed
    assert m.parity.rows > 0
    sig = m.signature_obj()
    assert sig.feature_names == list(FEATURES)
    assert sig.classes == ("0", "1", "2")
    assert m.scan.verdict in ("NONE", "INFO")
    assert "skl2onnx" in m.provenance.converters
    assert built.lock_cached
    assert not built.existed
    assert built.path == store.crates_dir / m.version.removeprefix("sha256:")
    assert sorted(p.relative_to(built.path).as_posix() for p in built.path.rglob("*")) == [
        "crate.yaml",
        "model",
        "model/model.onnx",
        "requirements.lock",
        "sbom.cdx.json",
        "scan.json",
        "signature.json",
    ]
    assert verify_crate(built.path) == m
    scan_doc = json.loads((built.path / "scan.json").read_bytes())
    assert scan_doc["files"][0]["path"] == "Iris Model.pkl"
    assert scan_doc["seconds"] == 0
    assert b"/tmp" not in (built.path / "scan.json").read_bytes()
    assert b"/tmp" not in (built.path / "crate.yaml").read_bytes()
    assert store.list() == [store.get("iris-model")]
    assert elapsed < 60
    print(f"\nbuild time (LogisticRegression, iris, lock cached): {elapsed:.2f}s {built.steps}")


def test_same_inputs_give_the_same_version(
    iris_pickle: Path, store: Store, tmp_path: Path, seed_lock: Callable[[Store, str], None]
) -> None:
    first = build(iris_pickle, name="iris", store=store)
    second = build(iris_pickle, name="iris", store=store)
    assert second.version == first.version
    assert second.existed
    assert second.manifest == first.manifest  # the stored copy, created time included
    assert len(store.list()) == 1
    assert len(list(store.crates_dir.iterdir())) == 1
    # Another store, another time, with SOURCE_DATE_EPOCH: the crates are byte-identical.
    other = Store(tmp_path / "other")
    seed_lock(other, "onnxruntime")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "0")
        a = build(iris_pickle, name="iris", store=other)
    assert a.version == first.version
    # every file is equal, crate.yaml and the SBOM included: no build time in a crate (the
    # default date is SOURCE_DATE_EPOCH=0's); the stored time is the index's
    assert snapshot(a.path) == snapshot(first.path)
    assert a.manifest.created == first.manifest.created == "1970-01-01T00:00:00Z"


def test_build_onnx_keeps_the_file(iris_onnx: Path, store: Store) -> None:
    built = build(iris_onnx, store=store)
    assert built.manifest.flavor == "onnx"
    assert (built.path / "model/model.onnx").read_bytes() == iris_onnx.read_bytes()
    assert built.manifest.source.sha256 == built.manifest.artifacts[0].sha256


def test_build_pipeline_with_categories(pipeline_joblib: Path, store: Store) -> None:
    built = build(pipeline_joblib, store=store)
    sig = built.manifest.signature_obj()
    assert sig.feature_names == ["age", "income", "city"]
    assert {c.name: c.dtype for c in sig.inputs}["city"] == "string"
    assert sig.classes == ("no", "yes")
    assert built.manifest.source.format.startswith("joblib")


def test_signature_file_overrides(iris_pickle: Path, store: Store, tmp_path: Path) -> None:
    derived = build(iris_pickle, name="iris", store=store)
    doc = derived.manifest.signature | {"extra": {"owner": "team-a"}}
    sig_file = tmp_path / "sig.yaml"
    import yaml

    sig_file.write_text(yaml.safe_dump(doc))
    built = build(iris_pickle, name="iris", store=store, signature=sig_file)
    assert built.manifest.signature_obj().extra["owner"] == "team-a"
    assert built.version != derived.version


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_build_native_boosters(
    framework: str,
    store: Store,
    tmp_path: Path,
    seed_lock: Callable[[Store, str], None],
) -> None:
    """Boosters saved in their own safe formats (XGBoost JSON, LightGBM text)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = x[:200, :6], y[:200]
    if framework == "xgboost":
        import xgboost as xgb

        path = tmp_path / "model.json"
        xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y).save_model(path)
    else:
        import lightgbm as lgb

        path = tmp_path / "model.txt"
        lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(x, y).booster_.save_model(
            path
        )
    seed_lock(store, framework)
    built = build(path, store=store)
    m = built.manifest
    assert m.flavor == framework
    assert m.runtime.kind in ("onnxruntime", framework)
    assert m.parity.passed
    assert m.signature_obj().task == "classification"
    assert built.lock_cached
    assert build(path, store=store).version == m.version  # deterministic artifacts
    verify_crate(built.path)


# -- bad input: a clear error, the right exit code, the store unchanged --------------------


def _evil_pickle(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    arg = f"touch {marker}".encode()
    p = tmp_path / "model.pkl"
    p.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(arg)) + arg + b"\x85R.")
    return p, marker


def _assert_unchanged(store: Store, before: dict[str, str]) -> None:
    assert snapshot(store.root) == before


def test_malicious_pickle_stops_at_the_scan(store: Store, tmp_path: Path) -> None:
    evil, marker = _evil_pickle(tmp_path)
    before = snapshot(store.root)
    seen: list[str] = []
    with pytest.raises(ScanFailed) as exc:
        build(evil, store=store, progress=seen.append)
    assert seen == ["scan"]
    assert exc.value.exit_code == 1
    assert exc.value.path == str(evil)
    assert exc.value.report.files[0].path == str(evil)
    assert any(
        "os.system" in f.message or f.symbol == "os.system" for f in exc.value.report.findings
    )
    assert not marker.exists()
    _assert_unchanged(store, before)


def test_corrupt_onnx(store: Store, tmp_path: Path) -> None:
    data = iris_onnx_bytes()
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(data[: len(data) // 2])
    before = snapshot(store.root)
    with pytest.raises(CorruptModel, match="the model file is corrupt") as exc:
        build(bad, store=store)
    assert exc.value.exit_code == 2
    assert exc.value.path == str(bad)
    assert exc.value.hint
    assert "re-export" in exc.value.hint
    _assert_unchanged(store, before)


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_missing_file_or_folder(store: Store, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nope.pkl"
    if kind == "folder":
        target.mkdir()
    before = snapshot(store.root)
    with pytest.raises(InputError) as exc:
        build(target, store=store)
    assert exc.value.path == str(target)
    assert exc.value.exit_code == 2
    _assert_unchanged(store, before)


def test_unsupported_model(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "not-a-model.pkl"
    p.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    before = snapshot(store.root)
    with pytest.raises(InputError) as exc:
        build(p, store=store)
    assert exc.value.exit_code == 2
    assert exc.value.path == str(p)
    assert "/modelcrate-build-" not in exc.value.render()
    _assert_unchanged(store, before)


def test_signature_mismatch(iris_pickle: Path, store: Store, tmp_path: Path) -> None:
    sig_file = tmp_path / "sig.json"
    sig_file.write_text(
        json.dumps(
            {
                "task": "classification",
                "inputs": [{"name": "only_one", "dtype": "float32"}],
                "outputs": [{"name": "label", "dtype": "string"}],
                "classes": ["0", "1", "2"],
            }
        )
    )
    before = snapshot(store.root)
    with pytest.raises(InputError, match="signature does not match the model") as exc:
        build(iris_pickle, store=store, signature=sig_file)
    assert "1 input columns, the model takes 4" in exc.value.message
    assert exc.value.hint is not None
    assert "sepal_length" in exc.value.hint
    _assert_unchanged(store, before)
    sig_file.write_text("{not json")
    with pytest.raises(InputError, match="invalid signature file"):
        build(iris_pickle, store=store, signature=sig_file)
    _assert_unchanged(store, before)


def test_parity_failure(store: Store, tmp_path: Path) -> None:
    """Catastrophic cancellation: float32 ONNX cannot reproduce 1e4*a - 1e4*b when a ~ b."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.uniform(0, 20_000, size=(50, 2)), columns=["a", "b"])
    model = LinearRegression().fit(x, 1e4 * x["a"] - 1e4 * x["b"])
    p = tmp_path / "cancel.pkl"
    p.write_bytes(pickle.dumps(model, protocol=4))
    rows = tmp_path / "rows.csv"
    base = np.arange(5, dtype=np.float32)
    pd.DataFrame({"a": np.float32(12345.678) + base, "b": np.float32(12345.679) + base}).to_csv(
        rows, index=False
    )
    before = snapshot(store.root)
    seen: list[str] = []
    with pytest.raises(InputError, match="does not reproduce") as exc:
        build(p, store=store, sample=rows, progress=seen.append)
    assert seen[-1] == "convert"
    assert exc.value.exit_code == 2
    assert exc.value.path == str(p)
    assert "tolerance" in exc.value.render()
    _assert_unchanged(store, before)


def test_bad_options(iris_pickle: Path, store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="invalid crate name"):
        build(iris_pickle, name="Bad Name", store=store)
    with pytest.raises(InputError, match="unknown flavor"):
        build(iris_pickle, flavor="torch", store=store)
    with pytest.raises(InputError, match="unsupported Python"):
        build(iris_pickle, python="three", store=store)
    with pytest.raises(InputError, match="sample file not found"):
        build(iris_pickle, sample=tmp_path / "rows.csv", store=store)
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported sample file type"):
        build(iris_pickle, sample=tmp_path / "rows.txt", store=store)


def test_store_under_a_file(iris_pickle: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    s = Store(blocker / "store")
    seen: list[str] = []
    with pytest.raises(StoreError, match="not a folder") as exc:
        build(iris_pickle, store=s, progress=seen.append)
    assert seen == []  # refused before any work
    assert exc.value.exit_code == 2
    assert exc.value.path == str(blocker / "store")
    assert blocker.read_text() == "a file"


def test_full_store(iris_pickle: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    build(iris_pickle, name="kept", store=store)
    before = snapshot(store.root)

    def full(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(build_mod, "write_file", full)
    with pytest.raises(StoreError, match="store is full") as exc:
        build(iris_pickle, name="iris", store=store)
    assert exc.value.exit_code == 2
    assert exc.value.path == str(store.root)
    _assert_unchanged(store, before)


def test_offline_without_cached_lock(
    iris_pickle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))
    s = Store(tmp_path / "fresh")
    with pytest.raises(InputError, match="package index is unreachable"):
        build(iris_pickle, store=s)
    assert not s.root.exists()


def test_first_build_caches_the_lock(
    iris_pickle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []

    def fake_compile(request: lockfile.LockRequest) -> bytes:
        calls.append(request)
        return b"numpy==2.0.0 \\\n    --hash=sha256:" + b"1" * 64 + b"\n"

    monkeypatch.setattr(lockfile, "_compile", fake_compile)
    s = Store(tmp_path / "fresh")
    first = build(iris_pickle, store=s)
    assert not first.lock_cached
    assert len(calls) == 1
    assert len(list(s.locks_dir.iterdir())) == 1
    second = build(iris_pickle, store=s)
    assert second.lock_cached
    assert len(calls) == 1
    assert second.version == first.version


def test_batching_settings_go_into_the_manifest_and_the_server(
    iris_onnx: Path, store: Store
) -> None:
    from modelcrate.serve.model import read_model_info

    default = build(iris_onnx, name="iris", store=store)
    tuned = build(iris_onnx, name="iris", store=store, max_batch_size=16, max_latency_ms=0.5)
    assert default.manifest.batching.max_batch_size == 64
    assert (tuned.manifest.batching.max_batch_size, tuned.manifest.batching.max_latency_ms) == (
        16,
        0.5,
    )
    assert tuned.version != default.version  # part of the crate's identity
    info = read_model_info(tuned.path)
    assert (info.max_batch_size, info.max_latency_ms) == (16, 0.5)
    with pytest.raises(InputError, match="invalid batching"):
        build(iris_onnx, name="iris", store=store, max_batch_size=0)
