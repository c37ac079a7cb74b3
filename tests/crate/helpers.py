"""Small real models and hand-assembled crates for the crate tests (no flavors needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelcrate.crate.layout import (
    LOCK_FILE,
    SBOM_FILE,
    SCAN_FILE,
    SIGNATURE_FILE,
    signature_json,
)
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
from modelcrate.crate.sbom import sbom_json
from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.crate.store import Committed, Store, write_file

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FAKE_LOCK = b"# requirements.lock (test)\nnumpy==2.0.0 \\\n    --hash=sha256:" + b"0" * 64 + b"\n"


def iris_onnx_bytes(seed: int = 0, *, c: float = 1.0) -> bytes:
    """A real ONNX classifier: skl2onnx on a LogisticRegression fitted on iris (another ``c``,
    another model)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=200, random_state=seed, C=c).fit(x, y)
    onx = to_onnx(model, x[:1].astype("float32"), target_opset=17, options={"zipmap": False})
    return bytes(onx.SerializeToString())


def signature() -> Signature:
    return Signature(
        inputs=tuple(Column(n, "float32") for n in FEATURES),
        outputs=(Output("label", "string"), Output("probabilities", "float32", (3,))),
        task="classification",
        classes=("0", "1", "2"),
        tensor_input=True,
    )


def manifest_for(
    name: str, model: bytes, *, lock: bytes = FAKE_LOCK, created: str = "2024-01-02T03:04:05Z"
) -> Manifest:
    return Manifest(
        name=name,
        version="sha256:" + "0" * 64,
        created=created,
        flavor="onnx",
        source=Source(
            path="model.onnx",
            sha256=hashlib.sha256(model).hexdigest(),
            size=len(model),
            format="onnx",
        ),
        artifacts=[
            ArtifactEntry(
                path="model/model.onnx",
                format="onnx",
                sha256=hashlib.sha256(model).hexdigest(),
                size=len(model),
            )
        ],
        signature=signature().to_dict(),
        runtime=Runtime(kind="onnxruntime", opset=17),
        scan=ScanSummary(verdict="NONE", counts={"CRITICAL": 0}, scanner_version="0.1.0"),
        parity=ParitySummary(
            rows=5, tolerance=1e-4, max_abs_diff=0.0, label_agreement=1.0, passed=True
        ),
        provenance=Provenance(modelcrate_version="0.1.0", converters={}),
        lock_sha256=hashlib.sha256(lock).hexdigest(),
    ).with_version()


def hand_crate(
    store: Store, name: str, model: bytes, *, created: str = "2024-01-02T03:04:05Z"
) -> Committed:
    """Write a valid crate into ``store`` the way build does, from an ONNX model's bytes."""
    manifest = manifest_for(name, model, created=created)
    files = {
        MANIFEST_NAME: manifest.dump_yaml(),
        "model/model.onnx": model,
        LOCK_FILE: FAKE_LOCK,
        SCAN_FILE: b'{"verdict": "NONE", "counts": {"CRITICAL": 0}}\n',
        SIGNATURE_FILE: signature_json(manifest),
        SBOM_FILE: sbom_json(manifest, FAKE_LOCK),
    }
    with store.staging() as stage:
        for rel, data in files.items():
            write_file(stage / rel, data)
        return store.commit(stage, manifest)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders as 'dir')."""
    if not root.exists():
        return {}
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
