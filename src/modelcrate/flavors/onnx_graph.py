"""Small, deterministic edits of converter output before it becomes a crate artifact.

Converters name graphs with random UUIDs and some declare a fixed batch size of 1 on outputs;
:func:`finalize` removes both, checks the model and serialises it deterministically, so the same
model converts to the same bytes every time. :func:`prepend_split` turns a graph with one
``[rows, 1]`` input per numeric column into one that takes a single ``[rows, features]`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelcrate.errors import InputError

__all__ = ["GRAPH_NAME", "finalize", "prepend_split"]

GRAPH_NAME = "modelcrate"


def finalize(model: Any, *, path: str) -> bytes:
    """Normalise, check (``onnx.checker``) and serialise a converted ``ModelProto``."""
    import onnx

    model.graph.name = GRAPH_NAME
    model.graph.doc_string = ""
    model.doc_string = ""
    # converters list opsets and metadata from sets and dicts: their order follows the hash seed
    _sort(model.opset_import, key=lambda o: (o.domain, o.version))
    _sort(model.metadata_props, key=lambda p: (p.key, p.value))
    canonicalize(model.graph)
    for value in model.graph.output:
        if value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape.dim
            if len(dims) and dims[0].HasField("dim_value"):
                dims[0].Clear()  # the batch dimension is dynamic
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(
            f"the converter produced an invalid ONNX model: {exc}",
            path=path,
            hint="report the estimator and library versions to modelcrate",
        ) from exc
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _sort(repeated: Any, *, key: Any) -> None:
    """Sort a protobuf repeated message field in place."""
    ordered = sorted(repeated, key=key)
    copies = [type(item)() for item in ordered]
    for copy, item in zip(copies, ordered, strict=True):
        copy.CopyFrom(item)
    del repeated[:]
    repeated.extend(copies)


def canonicalize(graph: Any, outer: dict[str, str] | None = None, prefix: str = "") -> None:
    """Rename nodes, initializers and intermediate tensors by position.

    Converters name them from process-wide counters and UUIDs (skl2onnx's ``UU000UU``, scan
    bodies), so two conversions in one process differ. Graph inputs and outputs of the main
    graph keep their names; subgraphs are renamed recursively, with their references to the
    enclosing graph's tensors following the enclosing renaming.
    """
    keep = {v.name for v in graph.input}
    if outer is None:
        keep |= {v.name for v in graph.output}
    mapping: dict[str, str] = dict(outer or {})
    for name in keep:
        mapping[name] = name
    for i, init in enumerate(graph.initializer):
        if init.name not in keep:
            mapping[init.name] = f"{prefix}c{i}"
            init.name = mapping[init.name]
    for i, node in enumerate(graph.node):
        for j, out in enumerate(node.output):
            if out and out not in keep:
                mapping[out] = f"{prefix}t{i}_{j}"
    for i, node in enumerate(graph.node):
        node.name = f"{prefix}n{i}_{node.op_type}"
        for j, name in enumerate(node.input):
            node.input[j] = mapping.get(name, name)
        for j, name in enumerate(node.output):
            node.output[j] = mapping.get(name, name)
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for k, sub in enumerate(subs):
                sub.name = f"{node.name}_{attr.name}{k}"
                canonicalize(sub, mapping, f"{prefix}n{i}{attr.name}{k}_")
    for value in (*graph.output, *graph.value_info):
        value.name = mapping.get(value.name, value.name)


def default_opset(model: Any) -> int:
    """The model's opset for the default ONNX domain."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def prepend_split(model: Any, columns: Sequence[str], tensor_name: str) -> Any:
    """Replace the per-column float inputs ``columns`` by one ``[N, len(columns)]`` input."""
    from onnx import TensorProto, helper

    graph = model.graph
    rename = {c: f"{c}__column" for c in columns} if tensor_name in columns else {}
    if rename:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    keep = [v for v in graph.input if v.name not in columns]
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(tensor_name, TensorProto.FLOAT, [None, len(columns)])]
    )
    graph.input.extend(keep)
    outputs = [rename.get(c, c) for c in columns]
    if len(columns) == 1:
        node = helper.make_node("Identity", [tensor_name], outputs, name=f"{GRAPH_NAME}_split")
    elif default_opset(model) < 13:  # Split takes its sizes as an attribute before opset 13
        node = helper.make_node(
            "Split", [tensor_name], outputs, name=f"{GRAPH_NAME}_split", axis=1,
            split=[1] * len(columns),
        )  # fmt: skip
    else:
        sizes = f"{GRAPH_NAME}_split_sizes"
        graph.initializer.append(
            helper.make_tensor(sizes, TensorProto.INT64, [len(columns)], [1] * len(columns))
        )
        node = helper.make_node(
            "Split", [tensor_name, sizes], outputs, name=f"{GRAPH_NAME}_split", axis=1
        )
    graph.node.insert(0, node)
    return model
