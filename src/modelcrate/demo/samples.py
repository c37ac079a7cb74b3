"""The demo's inputs: a real model people would ship, and attack files built from raw bytes."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def iris_frame() -> tuple[Any, Any]:
    """Iris (ships with scikit-learn) plus a categorical column derived from petal length."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=FEATURES)
    frame["petal size"] = pd.cut(
        frame["petal length (cm)"], [0, 2.5, 5.0, 10], labels=["small", "medium", "large"]
    ).astype(str)
    target = pd.Series([str(data.target_names[i]) for i in data.target], name="species")
    return frame, target


def train_pipeline(frame: Any, target: Any) -> Any:
    """A real pipeline: scaled numeric columns, one-hot categorical column, random forest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), FEATURES),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["petal size"]),
        ]
    )
    model = Pipeline([("prep", prep), ("clf", RandomForestClassifier(30, random_state=0))])
    return model.fit(frame, target)


def write_benign(folder: Path, model: Any) -> list[str]:
    """The trained pipeline as joblib, plus a small safetensors and a torch state dict."""
    import joblib
    import numpy as np

    joblib.dump(model, folder / "iris_pipeline.joblib", compress=3)
    names = ["iris_pipeline.joblib"]
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, weights.nbytes]}}
    ).encode()
    (folder / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + weights.tobytes()
    )
    names.append("model.safetensors")
    try:
        import torch
    except ImportError:
        return names
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.save(net.state_dict(), folder / "pytorch_model.bin")
    names.append("pytorch_model.bin")
    return names


def _reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """GLOBAL module name; (arg,); REDUCE; STOP -- protocol 2, built byte by byte, never loaded."""
    a = arg.encode()
    return (
        b"\x80\x02c"
        + f"{module}\n{name}\n".encode()
        + b"X"
        + struct.pack("<I", len(a))
        + a
        + b"\x85R."
    )


def write_attacks(folder: Path) -> list[str]:
    """Four attack files. Nothing here, or in the scanner, ever loads them."""
    marker = "/tmp/modelcrate-demo-pwned"
    (folder / "model.pkl").write_bytes(_reduce_pickle("os", "system", f"touch {marker}"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the same trick inside a PyTorch-style zip
        zf.writestr("archive/data.pkl", _reduce_pickle("builtins", "exec", "import os"))
        zf.writestr("archive/version", "3\n")
    (folder / "checkpoint.pt").write_bytes(buf.getvalue())
    # a payload followed by garbage: pickle.load runs the call, then fails
    broken = _reduce_pickle("subprocess", "getoutput", "id")[:-1] + b"\xff\xff"
    (folder / "broken.pkl").write_bytes(broken)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a member that escapes the extraction folder
        zf.writestr("../../tmp/evil.sh", "echo pwned")
    (folder / "assets.zip").write_bytes(buf.getvalue())
    return ["model.pkl", "checkpoint.pt", "broken.pkl", "assets.zip"]
