"""Small real models (scikit-learn, converted by skl2onnx) assembled into crate folders.

Each :class:`Built` keeps the original estimator, so tests compare the server's answers with
the original model's and with ONNX Runtime's. The crates are written exactly like ``build``
writes them (manifest, model/, requirements.lock, scan.json, signature.json), without going
through the build pipeline: the serve tests do not depend on the converters' heuristics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelcrate.crate.manifest import (
    MANIFEST_NAME,
    ArtifactEntry,
    Manifest,
    ParitySummary,
    Provenance,
    Runtime,
    ScanSummary,
    Source,
)
from modelcrate.crate.signature import Column, Output, Signature

IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
LOCK = b"# requirements.lock (test)\nnumpy==2.0.0 \\\n    --hash=sha256:" + b"0" * 64 + b"\n"


@dataclass
class Built:
    """A crate folder and what it was made from."""

    crate_dir: Path
    name: str
    signature: Signature
    model: Any  # the original scikit-learn estimator
    frame: Any  # a pandas DataFrame of sample rows (the model's training data)


def write_crate(
    root: Path, name: str, onnx: bytes, sig: Signature, flavor: str = "sklearn"
) -> Path:
    """A complete crate folder holding ``onnx`` and ``sig``, with a correct version digest."""
    crate = root / name
    (crate / "model").mkdir(parents=True)
    (crate / "model" / "model.onnx").write_bytes(onnx)
    scan_doc = {"tool": "modelcrate", "verdict": "INFO", "counts": {"INFO": 1}, "files": []}
    (crate / "scan.json").write_text(json.dumps(scan_doc))
    (crate / "requirements.lock").write_bytes(LOCK)
    digest = hashlib.sha256(onnx).hexdigest()
    manifest = Manifest(
        name=name,
        version="sha256:" + "0" * 64,
        created="2024-01-02T03:04:05Z",
        flavor=flavor,  # type: ignore[arg-type]
        source=Source(path="model.pkl", sha256=digest, size=len(onnx), format="pickle"),
        artifacts=[
            ArtifactEntry(path="model/model.onnx", format="onnx", sha256=digest, size=len(onnx))
        ],
        signature=sig.to_dict(),
        runtime=Runtime(kind="onnxruntime", opset=17),
        scan=ScanSummary(verdict="INFO", counts={"INFO": 1}, scanner_version="0.1.0"),
        parity=ParitySummary(
            rows=10, tolerance=1e-4, max_abs_diff=0.0, label_agreement=1.0, passed=True
        ),
        provenance=Provenance(modelcrate_version="0.1.0", converters={"skl2onnx": "test"}),
        lock_sha256=hashlib.sha256(LOCK).hexdigest(),
    ).with_version()
    (crate / MANIFEST_NAME).write_bytes(manifest.dump_yaml())
    sig_json = json.dumps(manifest.signature, indent=2, sort_keys=True).encode() + b"\n"
    (crate / "signature.json").write_bytes(sig_json)
    return crate


def _onnx(model: Any, initial_types: list[Any], *, classifier: bool = True) -> bytes:
    from skl2onnx import convert_sklearn

    options = {"zipmap": False} if classifier else None
    onx = convert_sklearn(model, initial_types=initial_types, target_opset=17, options=options)
    return bytes(onx.SerializeToString())


def iris(root: Path, name: str = "iris") -> Built:
    """LogisticRegression on iris: numeric only (one FP32 tensor), string class labels,
    feature names that are not identifiers."""
    import pandas as pd
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=list(IRIS_FEATURES)).astype("float32")
    labels = np.array(IRIS_CLASSES)[data.target]
    model = LogisticRegression(max_iter=500).fit(frame.to_numpy(), labels)
    onnx = _onnx(model, [("input", FloatTensorType([None, 4]))])
    sig = Signature(
        inputs=tuple(Column(n, "float32") for n in IRIS_FEATURES),
        outputs=(Output("label", "string"), Output("probabilities", "float32", (3,))),
        task="classification",
        classes=IRIS_CLASSES,
        tensor_input=True,
        tensor_name="input",
    )
    return Built(write_crate(root, name, onnx, sig), name, sig, model, frame)


def mixed(root: Path, name: str = "churn") -> Built:
    """A Pipeline with a ColumnTransformer (scaler + one-hot) and a binary classifier with
    integer labels: one tensor per column, BYTES for the string column."""
    import pandas as pd
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n).astype("float32"),
            "income": rng.normal(50, 15, n).astype("float32"),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    target = ((frame["age"] > 45) ^ (frame["plan"] == "pro")).astype(int).to_numpy()
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, target)
    onnx = _onnx(
        model,
        [
            ("age", FloatTensorType([None, 1])),
            ("income", FloatTensorType([None, 1])),
            ("plan", StringTensorType([None, 1])),
        ],
    )
    sig = Signature(
        inputs=(
            Column("age", "float32"),
            Column("income", "float32"),
            Column("plan", "string", ("basic", "plus", "pro")),
        ),
        outputs=(Output("label", "string"), Output("probabilities", "float32", (2,))),
        task="classification",
        classes=("0", "1"),
    )
    return Built(write_crate(root, name, onnx, sig), name, sig, model, frame)


def regressor(root: Path, name: str = "houses") -> Built:
    """A small RandomForestRegressor: numeric tensor in, ``prediction`` out."""
    import pandas as pd
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_regression
    from sklearn.ensemble import RandomForestRegressor

    x, y = make_regression(n_samples=200, n_features=5, random_state=0)
    names = [f"f{i}" for i in range(5)]
    frame = pd.DataFrame(x, columns=names).astype("float32")
    model = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0)
    model.fit(frame.to_numpy(), y)
    onnx = _onnx(model, [("input", FloatTensorType([None, 5]))], classifier=False)
    sig = Signature(
        inputs=tuple(Column(n, "float32") for n in names),
        outputs=(Output("prediction", "float32"),),
        task="regression",
        tensor_input=True,
        extra={"onnx_output.prediction": "variable"},  # skl2onnx's name for the output
    )
    return Built(write_crate(root, name, onnx, sig), name, sig, model, frame)


def onnx_session(built: Built) -> Any:
    import onnxruntime as ort

    path = built.crate_dir / "model" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def records(built: Built, rows: slice) -> list[dict[str, Any]]:
    """Rows of the sample frame as JSON-ready records (Python scalars)."""
    part = built.frame.iloc[rows]
    return [
        {k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
        for row in part.to_dict("records")
    ]
