"""What XGBoost and LightGBM share: ONNX through onnxmltools when it reproduces the booster,
else the booster's own safe format (XGBoost JSON, LightGBM text) run by the native library.

The ONNX graph is kept only if it passes parity on the same rows as the native artifact would;
a converter error or a parity failure falls back to the native artifact, and the reason is
recorded in the parity details.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import TARGET_OPSET, Artifact, Converted, ParityError, versions
from modelcrate.flavors.onnx_graph import finalize
from modelcrate.flavors.parity import NATIVE_TOLERANCE, ONNX_TOLERANCE, SampleRows, compare
from modelcrate.runtime import predictor_from_bytes
from modelcrate.runtime.onnx_runtime import LABEL_MAP_KEY, OUTPUT_KEY

__all__ = ["NativeArtifact", "convert_booster", "onnx_signature"]


@dataclass(frozen=True)
class NativeArtifact:
    data: bytes
    path: str  # "model/model.json"
    format: str  # "xgboost-json"
    runtime: str  # "xgboost"


def convert_booster(
    *,
    flavor: str,
    sig: Signature,
    rows: SampleRows,
    reference: dict[str, np.ndarray],
    to_onnx: Callable[[], Any],
    native: Callable[[], NativeArtifact],
    source_path: str,
) -> Converted:
    """Try ONNX (kept if parity holds), else the native artifact (parity checked too)."""
    lib = "xgboost" if flavor == "xgboost" else "lightgbm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = to_onnx()
        onnx_sig = onnx_signature(sig, [o.name for o in onx.graph.output])
        data = finalize(onx, path=source_path)
        got = predictor_from_bytes(data, "onnxruntime", onnx_sig, path=source_path).predict(
            rows.inputs()
        )
        parity = compare(onnx_sig, reference, got, rows, tolerance=ONNX_TOLERANCE, path=source_path)
    except ParityError as exc:
        reason = f"the ONNX conversion failed parity ({exc.parity.details.splitlines()[0]})"
    except InputError:
        raise
    except Exception as exc:  # onnxmltools raises anything for what it does not support
        reason = f"onnxmltools: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    else:
        return Converted(
            flavor=flavor,
            artifacts=(Artifact("model/model.onnx", data, "onnx"),),
            signature=onnx_sig,
            runtime="onnxruntime",
            opset=TARGET_OPSET,
            parity=parity,
            converters=versions("onnxmltools", "onnx", lib),
        )
    art = native()
    extra = dict(sig.extra)
    extra["conversion"] = f"native {art.format}: {reason}"
    native_sig = replace(sig, extra=extra)
    got = predictor_from_bytes(art.data, art.runtime, native_sig, path=source_path).predict(
        rows.inputs()
    )
    parity = compare(native_sig, reference, got, rows, tolerance=NATIVE_TOLERANCE, path=source_path)
    parity = replace(parity, details=f"{parity.details}; kept {art.format} because {reason}")
    return Converted(
        flavor=flavor,
        artifacts=(Artifact(art.path, art.data, art.format),),
        signature=native_sig,
        runtime=art.runtime,
        opset=None,
        parity=parity,
        converters=versions(lib),
    )


def onnx_signature(
    sig: Signature, graph_outputs: list[str], classes: Sequence[object] | None = None
) -> Signature:
    """Map the contract outputs onto a converter's graph outputs (label, probabilities|variable).

    ``classes`` (the model's native class values) lets the runtime map labels that the graph
    emits differently (bool -> 0/1, 2.0 -> 2) back to the signature's class labels.
    """
    extra = dict(sig.extra)
    if classes is not None and sig.classes is not None:
        emitted = [_emitted(c) for c in classes]
        if emitted != list(sig.classes):
            extra[LABEL_MAP_KEY] = json.dumps(dict(zip(emitted, sig.classes, strict=True)))
    if sig.task == "classification":
        extra[OUTPUT_KEY + "label"] = graph_outputs[0]
        if len(graph_outputs) > 1:
            extra[OUTPUT_KEY + "probabilities"] = graph_outputs[1]
    else:
        extra[OUTPUT_KEY + "prediction"] = graph_outputs[0]
    return replace(sig, extra=extra)


def _emitted(value: object) -> str:
    """The label an ONNX classifier emits for a class value (skl2onnx casts bool/float)."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)
