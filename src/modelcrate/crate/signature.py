"""The model's API contract: named, typed inputs and outputs, derived from the model itself.

One :class:`Signature` drives everything downstream: the Pydantic request/response models and
OpenAPI of ``/predict``, the Open Inference Protocol V2 metadata, batch column checks and
compatibility checks between crate versions. It is plain data (frozen dataclasses) and
round-trips through ``to_dict``/``from_dict`` into ``crate.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Column dtypes a signature may use, and their Open Inference Protocol V2 datatype names.
DType = Literal["float32", "float64", "int32", "int64", "bool", "string"]
V2_DATATYPE: dict[str, str] = {
    "float32": "FP32",
    "float64": "FP64",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
}
Task = Literal["classification", "regression", "other"]


@dataclass(frozen=True)
class Column:
    """One input feature (a column of the request's records)."""

    name: str
    dtype: DType
    # Allowed values for a categorical string column, when the model knows them (e.g. one-hot).
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Output:
    """One model output. ``shape`` excludes the batch dimension (-1 = variable)."""

    name: str
    dtype: DType
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Signature:
    """Inputs, outputs and task of a model.

    ``tensor_input`` is True when every input is numeric and the runtime takes them as one
    ``[rows, features]`` tensor (``tensor_name``, ``tensor_dtype``): the V2 API then exposes that
    single tensor, as ONNX graphs and KServe expect. Otherwise V2 exposes one tensor per column.
    """

    inputs: tuple[Column, ...]
    outputs: tuple[Output, ...]
    task: Task = "other"
    classes: tuple[str, ...] | None = None  # class labels as strings, in model order
    tensor_input: bool = False
    tensor_name: str = "input"
    tensor_dtype: DType = "float32"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "inputs": [
                {"name": c.name, "dtype": c.dtype}
                | ({"categories": list(c.categories)} if c.categories is not None else {})
                for c in self.inputs
            ],
            "outputs": [
                {"name": o.name, "dtype": o.dtype, "shape": list(o.shape)} for o in self.outputs
            ],
            "classes": list(self.classes) if self.classes is not None else None,
            "tensor_input": self.tensor_input,
            "tensor_name": self.tensor_name,
            "tensor_dtype": self.tensor_dtype,
            "extra": dict(sorted(self.extra.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Signature:
        """Inverse of :meth:`to_dict`; raises ValueError, KeyError or TypeError on bad data."""
        raw_inputs = data["inputs"]
        raw_outputs = data["outputs"]
        if not isinstance(raw_inputs, list) or not isinstance(raw_outputs, list):
            raise TypeError("signature inputs and outputs must be lists")
        inputs = tuple(
            Column(
                str(c["name"]),
                _dtype(c["dtype"]),
                tuple(str(v) for v in c["categories"]) if c.get("categories") is not None else None,
            )
            for c in raw_inputs
        )
        outputs = tuple(
            Output(str(o["name"]), _dtype(o["dtype"]), tuple(int(d) for d in o.get("shape", [])))
            for o in raw_outputs
        )
        classes = data.get("classes")
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise TypeError("signature extra must be a mapping")
        task = str(data.get("task", "other"))
        if task not in ("classification", "regression", "other"):
            raise ValueError(f"unknown task {task!r}")
        return cls(
            inputs=inputs,
            outputs=outputs,
            task=task,  # type: ignore[arg-type]
            classes=tuple(str(c) for c in classes) if isinstance(classes, list) else None,
            tensor_input=bool(data.get("tensor_input", False)),
            tensor_name=str(data.get("tensor_name", "input")),
            tensor_dtype=_dtype(data.get("tensor_dtype", "float32")),
            extra={str(k): str(v) for k, v in extra.items()},
        )


def _dtype(value: object) -> DType:
    if value not in V2_DATATYPE:
        raise ValueError(f"unknown dtype {value!r}; expected one of {sorted(V2_DATATYPE)}")
    return value  # type: ignore[return-value]
