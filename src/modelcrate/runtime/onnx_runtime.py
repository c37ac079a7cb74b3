"""The ONNX Runtime predictor: one session per process, one ``run`` per batch.

The signature's ``extra`` maps each contract output to the graph output that holds it
(``onnx_output.label`` -> ``"label"``, ``onnx_output.prediction`` -> ``"variable"``); an output
without a mapping is read from the graph output of the same name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.runtime.inputs import PredictionInputError, as_matrix, numeric_column, string_column
from modelcrate.runtime.outputs import labels_from_values, prediction, probabilities

__all__ = ["INPUT_KEY", "LABEL_MAP_KEY", "MISSING_KEY", "OUTPUT_KEY", "OnnxPredictor"]

THREADS_ENV = "MODELCRATE_ORT_THREADS"  # intra-op threads per process (default: its CPUs)
OUTPUT_KEY = "onnx_output."
INPUT_KEY = "onnx_input."  # a column whose graph input has another name (sanitised by skl2onnx)
# JSON {emitted label: class label} when the graph's labels are not the class labels as
# written (scikit-learn bool classes come out of skl2onnx as 0/1)
LABEL_MAP_KEY = "onnx_label_map"
# "reject" when the graph does not reproduce the original model's handling of NaN
MISSING_KEY = "missing_values"
_NUMPY_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class OnnxPredictor:
    """Runs an ONNX graph with ONNX Runtime: on CUDA where the GPU build and a GPU are there.
    ``data``: the graph's bytes, or its file path."""

    def __init__(
        self,
        data: bytes | str,
        signature: Signature,
        *,
        path: str = "model.onnx",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

        options = ort.SessionOptions()
        options.log_severity_level = 3  # converters' benign shape warnings stay out of logs
        configure_threads(options, threads)
        available = set(ort.get_available_providers())
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise InputError(
                f"ONNX Runtime cannot load the model: {exc}",
                path=path,
                hint="the graph uses an operator or opset this ONNX Runtime lacks, or is corrupt",
            ) from exc
        self.signature = signature
        graph_inputs = {i.name: i for i in self._session.get_inputs()}
        graph_outputs = {o.name for o in self._session.get_outputs()}
        if signature.tensor_input:
            tensor = graph_inputs.get(signature.tensor_name)
            if tensor is None or len(graph_inputs) != 1:
                raise _mismatch(path, f"one input named {signature.tensor_name!r}", graph_inputs)
            self._tensor_type = _NUMPY_TYPES.get(tensor.type, np.float32)
        feeds = {c.name: signature.extra.get(INPUT_KEY + c.name, c.name) for c in signature.inputs}
        if not signature.tensor_input:
            missing = [f for f in feeds.values() if f not in graph_inputs]
            if missing or len(graph_inputs) != len(signature.inputs):
                raise _mismatch(path, f"inputs {list(feeds.values())}", graph_inputs)
        # (column, graph input, is string, graph dtype, graph rank)
        self._columns = [
            (c.name, feeds[c.name], c.dtype == "string",
             _NUMPY_TYPES.get(graph_inputs[feeds[c.name]].type, np.float32),
             len(graph_inputs[feeds[c.name]].shape))
            for c in signature.inputs
            if not signature.tensor_input
        ]  # fmt: skip
        self._reject_nan = signature.extra.get(MISSING_KEY) == "reject"
        self._label_map: dict[str, str] = json.loads(signature.extra.get(LABEL_MAP_KEY, "{}"))
        self._outputs = [o.name for o in signature.outputs]
        self._fetch = [signature.extra.get(OUTPUT_KEY + n, n) for n in self._outputs]
        absent = [f for f in self._fetch if f not in graph_outputs]
        if absent:
            raise InputError(
                f"the signature's outputs {absent} are not outputs of the ONNX graph "
                f"(it has {sorted(graph_outputs)})",
                path=path,
                hint="fix the signature's outputs/extra mapping",
            )

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._feeds(inputs)
        try:
            raw = self._session.run(self._fetch, feeds)
        except Exception as exc:  # ORT's InvalidArgument etc.: the request did not fit
            raise PredictionInputError(f"ONNX Runtime rejected the input: {exc}") from exc
        sig = self.signature
        result: dict[str, np.ndarray] = {}
        for name, value in zip(self._outputs, raw, strict=True):
            if name == "label":
                labels = labels_from_values(value)
                if self._label_map:
                    lut = self._label_map
                    labels = np.array([lut.get(v, v) for v in labels], dtype=object)
                result[name] = labels
            elif name == "probabilities":
                result[name] = probabilities(value, sig)
            elif name == "prediction":
                result[name] = prediction(value, sig)
            else:
                result[name] = np.asarray(value)
        return result

    def _feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig = self.signature
        if sig.tensor_input:
            matrix = as_matrix(inputs, sig)
            if self._reject_nan and np.isnan(matrix).any():
                bad = [sig.inputs[j].name for j in np.flatnonzero(np.isnan(matrix).any(axis=0))]
                raise _missing(bad)
            if self._tensor_type is not np.float32:
                matrix = matrix.astype(self._tensor_type)
            return {sig.tensor_name: matrix}
        feeds: dict[str, np.ndarray] = {}
        rows: int | None = None
        for name, feed, is_string, dtype, rank in self._columns:
            col = string_column(inputs, name) if is_string else numeric_column(inputs, name)
            if self._reject_nan and not is_string and np.isnan(col).any():
                raise _missing([name])
            if dtype is not np.float32 and not is_string:
                col = col.astype(dtype)
            if rows is None:
                rows = len(col)
            elif len(col) != rows:
                raise PredictionInputError(
                    f"column {name!r} has {len(col)} values, other columns {rows}"
                )
            feeds[feed] = col.reshape(-1, 1) if rank == 2 else col
        return feeds


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def configure_threads(options: Any, threads: int | None) -> None:
    """ONNX Runtime's intra-op threads: ``threads``, else ``$MODELCRATE_ORT_THREADS``, else the
    CPUs of this process's affinity mask (ORT's default counts the machine's cores, so a server
    pinned to one core would run competing threads). Idle threads sleep instead of spinning:
    a spinning pool burns the CPU the event loop needs between predictions."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "")
        threads = int(env) if env.isdigit() and int(env) > 0 else cpu_count()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")


def _mismatch(path: str, want: str, graph_inputs: dict[str, Any]) -> InputError:
    have = ", ".join(f"{n} {i.type} {i.shape}" for n, i in graph_inputs.items())
    return InputError(
        f"the signature expects {want}, but the ONNX graph takes: {have}",
        path=path,
        hint="fix the signature so that its inputs name the graph's inputs",
    )


def _missing(columns: list[str]) -> PredictionInputError:
    return PredictionInputError(
        f"missing values (NaN/null) in {columns}: this model's ONNX graph does not reproduce "
        "the original's handling of missing values, so it does not accept them"
    )
