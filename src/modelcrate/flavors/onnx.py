"""ONNX files: kept byte for byte, after ``onnx.checker`` and an external-data check.

A crate stores exactly one file per model, so a graph whose tensors live in external data
files (which could also point outside the model's folder) is refused. The signature comes from
the graph: one ``[rows, features]`` input (a tensor model) or one ``[rows, 1]``/``[rows]``
input per column; two outputs, a label and probabilities (tensor or ZipMap), make a classifier
(class labels from the ``ai.onnx.ml`` classifier or ZipMap node), one float output a
regressor; anything else is served as its raw named outputs ("other").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcrate.crate.signature import Column, Output, Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import Artifact, Converted, Parity, versions
from modelcrate.flavors.infer import apply_override, tabular_signature
from modelcrate.flavors.parity import sample_rows
from modelcrate.runtime.onnx_runtime import OUTPUT_KEY, OnnxPredictor

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = ["OnnxSource", "convert_onnx_model", "graph_signature", "load_onnx"]

# TensorProto element types -> signature dtypes
_DTYPES = {1: "float32", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 8: "string"}
_CLASSIFIER_OPS = ("ZipMap", "TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")


@dataclass(frozen=True)
class OnnxSource:
    """A checked ONNX file: its exact bytes and the parsed graph."""

    data: bytes
    model: Any  # onnx.ModelProto


def load_onnx(path: Path) -> OnnxSource:
    """Parse and check an ONNX file; refuse external data."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

    where = str(path)
    try:
        data = path.read_bytes()
        model = onnx.load_from_string(data)
    except (OSError, DecodeError, ValueError) as exc:
        raise InputError(
            f"not a readable ONNX model: {exc}",
            path=where,
            hint="the file is truncated or not ONNX; re-export it with onnx.save()",
        ) from exc
    external = [t.name for t in _tensors(model.graph) if t.data_location == t.EXTERNAL]
    if external:
        raise InputError(
            f"the ONNX graph keeps tensors in external data files ({', '.join(external[:5])})",
            path=where,
            hint="a crate stores one self-contained file: re-save with "
            "onnx.save_model(model, path, save_as_external_data=False)",
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(
            f"invalid ONNX model: {str(exc).splitlines()[0]}",
            path=where,
            hint="fix the exporter's output; onnx.checker.check_model() must pass",
        ) from exc
    return OnnxSource(data, model)


def convert_onnx_model(
    src: OnnxSource,
    *,
    source_path: str,
    sample: pd.DataFrame | None,
    signature: Signature | None,
) -> Converted:
    """Keep the file as is; derive (or check) the signature; run sample rows through it."""
    if not isinstance(src, OnnxSource):
        raise InputError(
            f"expected an ONNX model, got {type(src).__name__}",
            path=source_path,
            hint="pick the flavor that matches the model (--flavor)",
        )
    try:
        derived: Signature | None = graph_signature(src.model, path=source_path)
    except InputError:
        if signature is None:
            raise
        derived = None
    sig = apply_override(derived, signature, path=source_path) if derived else signature
    assert sig is not None
    if derived is None:  # the user's signature describes a graph we could not read alone
        sig = _with_output_map(sig, src.model)
    predictor = OnnxPredictor(src.data, sig, path=source_path)
    rows = sample_rows(sig, sample)
    predictor.predict(rows.inputs())
    parity = Parity(
        rows=rows.rows,
        tolerance=0.0,
        max_abs_diff=0.0,
        label_agreement=1.0,
        passed=True,
        details=f"ONNX file kept byte for byte (onnx.checker passed); {rows.rows} {rows.source} "
        "rows ran through ONNX Runtime; there is no other model to compare with",
    )
    opset = next((o.version for o in src.model.opset_import if o.domain in ("", "ai.onnx")), None)
    return Converted(
        flavor="onnx",
        artifacts=(Artifact("model/model.onnx", src.data, "onnx"),),
        signature=sig,
        runtime="onnxruntime",
        opset=int(opset) if opset is not None else None,
        parity=parity,
        converters=versions("onnx", "onnxruntime"),
    )


def graph_signature(model: Any, *, path: str) -> Signature:
    """The signature an ONNX graph describes (see the module docstring)."""
    graph = model.graph
    init = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init]
    if len(inputs) == 1 and _rank(inputs[0]) == 2 and _dim(inputs[0], 1) not in (None, 1):
        value = inputs[0]
        dtype = _dtype(value, path)
        names = [f"f{i}" for i in range(_dim(value, 1) or 0)]
        columns = tuple(Column(n, dtype) for n in names)  # type: ignore[arg-type]
        tensor = True
    else:
        for v in inputs:
            if _rank(v) not in (1, 2) or (_rank(v) == 2 and _dim(v, 1) != 1):
                raise InputError(
                    f"ONNX input {v.name!r} has shape {_shape(v)}: modelcrate derives "
                    "signatures for tabular graphs only (one [rows, features] input, or one "
                    "[rows, 1] input per column)",
                    path=path,
                    hint="pass --signature with the inputs and outputs of this graph",
                )
        columns = tuple(Column(v.name, _dtype(v, path)) for v in inputs)  # type: ignore[arg-type]
        tensor = False
    base = _outputs(model, columns, path)
    if tensor:
        return Signature(
            inputs=columns,
            outputs=base.outputs,
            task=base.task,
            classes=base.classes,
            tensor_input=True,
            tensor_name=inputs[0].name,
            tensor_dtype=columns[0].dtype,
            extra=base.extra,
        )
    return Signature(
        inputs=columns, outputs=base.outputs, task=base.task, classes=base.classes,
        extra=base.extra,
    )  # fmt: skip


def _outputs(model: Any, columns: tuple[Column, ...], path: str) -> Signature:
    outs = list(model.graph.output)
    classes = _class_labels(model)
    if len(outs) == 2:
        label, proba = outs
        label_ok = _kind(label) in ("int64", "string") and _rank(label) in (1, 2)
        if label_ok and (_is_zipmap(proba) or (_kind(proba) == "float32" and _rank(proba) == 2)):
            if classes is None and not _is_zipmap(proba) and _dim(proba, 1):
                classes = list(range(_dim(proba, 1) or 0))
            if classes is not None:
                return tabular_signature(
                    [c.name for c in columns], task="classification", classes=classes,
                    probabilities=True,
                    extra={OUTPUT_KEY + "label": label.name,
                           OUTPUT_KEY + "probabilities": proba.name},
                )  # fmt: skip
    if len(outs) == 1 and _kind(outs[0]) in ("float32", "float64") and _rank(outs[0]) in (1, 2):
        targets = _dim(outs[0], 1) if _rank(outs[0]) == 2 else 1
        return tabular_signature(
            [c.name for c in columns], task="regression", classes=None, probabilities=False,
            prediction_dtype=_kind(outs[0]) or "float32", targets=targets or 1,
            extra={OUTPUT_KEY + "prediction": outs[0].name},
        )  # fmt: skip
    other = []
    for out in outs:
        if _kind(out) is None:
            raise InputError(
                f"ONNX output {out.name!r} is not a tensor",
                path=path,
                hint="pass --signature naming the outputs to serve",
            )
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in _dims(out)[1:])
        other.append(Output(out.name, _kind(out), shape))  # type: ignore[arg-type]
    return Signature(inputs=columns, outputs=tuple(other), task="other")


def _with_output_map(sig: Signature, model: Any) -> Signature:
    from dataclasses import replace

    names = [o.name for o in model.graph.output]
    extra = dict(sig.extra)
    if sig.task == "classification" and len(names) == 2:
        extra.setdefault(OUTPUT_KEY + "label", names[0])
        extra.setdefault(OUTPUT_KEY + "probabilities", names[1])
    elif sig.task == "regression" and len(names) == 1:
        extra.setdefault(OUTPUT_KEY + "prediction", names[0])
    return replace(sig, extra=extra)


def _class_labels(model: Any) -> list[object] | None:
    for node in model.graph.node:
        if node.op_type in _CLASSIFIER_OPS:
            for attr in node.attribute:
                if attr.name == "classlabels_strings" and attr.strings:
                    return [s.decode("utf-8") for s in attr.strings]
                if attr.name in ("classlabels_int64s", "classlabels_ints") and attr.ints:
                    return list(attr.ints)
    return None


def _tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _dims(value: Any) -> Any:
    return value.type.tensor_type.shape.dim


def _rank(value: Any) -> int | None:
    if not value.type.HasField("tensor_type"):
        return None
    return len(_dims(value)) if value.type.tensor_type.HasField("shape") else None


def _dim(value: Any, i: int) -> int | None:
    dims = _dims(value)
    return int(dims[i].dim_value) if len(dims) > i and dims[i].HasField("dim_value") else None


def _shape(value: Any) -> list[object]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in _dims(value)]


def _kind(value: Any) -> str | None:
    if not value.type.HasField("tensor_type"):
        return None
    return _DTYPES.get(value.type.tensor_type.elem_type)


def _dtype(value: Any, path: str) -> str:
    kind = _kind(value)
    if kind is None:
        raise InputError(
            f"ONNX input {value.name!r} is not a tensor of a supported type",
            path=path,
            hint="inputs must be float, double, int32/int64, bool or string tensors",
        )
    return kind


def _is_zipmap(value: Any) -> bool:
    return bool(value.type.HasField("sequence_type"))
