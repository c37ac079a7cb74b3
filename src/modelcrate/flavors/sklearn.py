"""scikit-learn -> ONNX (skl2onnx), with skops as the fallback for estimators no converter has.

Purely numeric models take one float32 ``[rows, features]`` tensor; models with string columns
take one ``[rows, 1]`` input per column (skl2onnx ``initial_types`` per column). Pipelines with
a ``ColumnTransformer`` that selects columns by name are converted per column and, when they are
numeric, given a ``Split`` node in front so that they still take one tensor. Classifiers are
converted with ``zipmap=False``: a plain probability tensor. XGBoost/LightGBM estimators inside
pipelines are converted with onnxmltools' converters, registered into skl2onnx.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import (
    ML_OPSET,
    TARGET_OPSET,
    Artifact,
    Converted,
    ParityError,
    UnsupportedModelError,
    versions,
)
from modelcrate.flavors.boosters import onnx_signature
from modelcrate.flavors.infer import apply_override, ct_columns, sklearn_signature
from modelcrate.flavors.missing import has_imputer, nan_native, probe_missing
from modelcrate.flavors.onnx_graph import finalize, prepend_split
from modelcrate.flavors.parity import (
    NATIVE_TOLERANCE,
    ONNX_TOLERANCE,
    SampleRows,
    compare,
    sample_rows,
)
from modelcrate.runtime import predictor_from_bytes
from modelcrate.runtime.onnx_runtime import INPUT_KEY
from modelcrate.runtime.outputs import labels_from_values

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = ["convert_sklearn_model", "reference_outputs", "walk"]


def convert_sklearn_model(
    model: Any, *, source_path: str, sample: pd.DataFrame | None, signature: Signature | None
) -> Converted:
    """Convert, derive the signature and check parity (see the module docstring).

    ONNX first. skops is the fallback when skl2onnx cannot convert the estimator, or when the
    graph fails parity only on rows with missing values (skl2onnx does not route NaN as
    scikit-learn's trees do); if skops is refused too, the error names the estimator (or the
    ONNX parity report is raised). Any other parity failure raises :class:`ParityError`.
    """
    if not callable(getattr(model, "predict", None)):
        raise InputError(
            f"the file holds a {type(model).__module__}.{type(model).__name__}, not a fitted "
            "scikit-learn estimator with predict()",
            path=source_path,
            hint="save the fitted estimator or pipeline itself",
        )
    sig = apply_override(sklearn_signature(model, sample), signature, path=source_path)
    rows, reference = _parity_rows(model, sig, sample, path=source_path)
    try:
        data, onnx_sig = to_onnx(model, sig, path=source_path)
    except InputError:
        raise
    except Exception as exc:  # converters raise anything from RuntimeError to NameError
        reason = f"skl2onnx: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return _skops(model, sig, rows, reference, path=source_path, reason=reason)
    got = predictor_from_bytes(data, "onnxruntime", onnx_sig, path=source_path).predict(
        rows.inputs()
    )
    try:
        parity = compare(onnx_sig, reference, got, rows, tolerance=ONNX_TOLERANCE, path=source_path)
    except ParityError as exc:
        if not _only_missing_values_differ(onnx_sig, rows, reference, got):
            raise
        reason = (
            "the ONNX graph does not reproduce the original's handling of missing values "
            f"({exc.parity.details.splitlines()[0]})"
        )
        try:
            return _skops(model, sig, rows, reference, path=source_path, reason=reason)
        except (ParityError, UnsupportedModelError):
            raise exc from None
    no_nan = sample is None or not sample.isna().to_numpy().any()
    if no_nan and not has_imputer(walk(model)) and nan_native(walk(model)):
        onnx_sig, parity = probe_missing(
            model, onnx_sig, data, parity,
            ranges=feature_ranges(model, sig.feature_names), path=source_path,
        )  # fmt: skip
    converters = versions("skl2onnx", "onnx", "scikit-learn")
    if any(_is_booster(e) for e in walk(model)):
        converters |= versions("onnxmltools", "xgboost", "lightgbm")
    return Converted(
        flavor="sklearn",
        artifacts=(Artifact("model/model.onnx", data, "onnx"),),
        signature=onnx_sig,
        runtime="onnxruntime",
        opset=TARGET_OPSET,
        parity=parity,
        converters=converters,
    )


def _parity_rows(
    model: Any, sig: Signature, sample: pd.DataFrame | None, *, path: str
) -> tuple[SampleRows, dict[str, np.ndarray]]:
    """Parity rows and the original's outputs on them. Synthesized rows get missing values
    when the model has an imputer, unless it then fails (a column without imputer)."""
    ranges = feature_ranges(model, sig.feature_names)
    if sample is None and has_imputer(walk(model)):
        rows = sample_rows(sig, None, ranges=ranges, missing=True)
        try:
            return rows, reference_outputs(model, rows, sig, path=path)
        except InputError:
            pass  # some column is not imputed: synthesize without missing values
    rows = sample_rows(sig, sample, ranges=ranges)
    return rows, reference_outputs(model, rows, sig, path=path)


def _only_missing_values_differ(
    sig: Signature, rows: SampleRows, reference: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> bool:
    """True when parity fails only on rows with missing values (a known skl2onnx limit for
    trees); any other parity failure is reported, not worked around."""
    complete = ~rows.missing()
    if complete.all() or not complete.any():
        return False
    try:
        compare(
            sig, {k: np.asarray(v)[complete] for k, v in reference.items()},
            {k: np.asarray(v)[complete] for k, v in got.items()}, rows.subset(complete),
            tolerance=ONNX_TOLERANCE, path="",
        )  # fmt: skip
    except ParityError:
        return False
    return True


def _skops(
    model: Any,
    sig: Signature,
    rows: SampleRows,
    reference: dict[str, np.ndarray],
    *,
    path: str,
    reason: str,
) -> Converted:
    from modelcrate.flavors.skops_fallback import skops_artifact

    data, skops_sig = skops_artifact(model, sig, path=path, reason=reason)
    got = predictor_from_bytes(data, "skops", skops_sig, path=path).predict(rows.inputs())
    parity = compare(skops_sig, reference, got, rows, tolerance=NATIVE_TOLERANCE, path=path)
    parity = replace(parity, details=f"{parity.details}; kept skops because {reason}")
    return Converted(
        flavor="sklearn",
        artifacts=(Artifact("model/model.skops", data, "skops"),),
        signature=skops_sig,
        runtime="skops",
        opset=None,
        parity=parity,
        converters=versions("skops", "scikit-learn"),
    )


def to_onnx(model: Any, sig: Signature, *, path: str) -> tuple[bytes, Signature]:
    """ONNX bytes (deterministic) and the signature with its output mapping."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    register_boosters(model)
    per_column = not sig.tensor_input or any(
        type(e).__name__ == "ColumnTransformer" for e in walk(model)
    )
    if per_column:
        initial: list[tuple[str, Any]] = [
            (c.name, StringTensorType([None, 1]) if c.dtype == "string"
             else FloatTensorType([None, 1]))
            for c in sig.inputs
        ]  # fmt: skip
    else:
        initial = [(sig.tensor_name, FloatTensorType([None, len(sig.inputs)]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = convert_sklearn(
            model,
            initial_types=initial,
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": ML_OPSET},
            options=_options(model),
        )
    # skl2onnx sanitises input names ("petal length (cm)" -> "petal_length__cm_")
    graph_inputs = [v.name for v in onx.graph.input]
    renamed = {}
    if per_column:
        renamed = {c.name: g for c, g in zip(sig.inputs, graph_inputs, strict=True) if c.name != g}
        if sig.tensor_input:
            prepend_split(onx, graph_inputs, sig.tensor_name)
            renamed = {}
    if renamed:
        sig = replace(sig, extra={**sig.extra, **{INPUT_KEY + k: v for k, v in renamed.items()}})
    classes = getattr(final_estimator(model), "classes_", None)
    mapped = onnx_signature(
        sig, [o.name for o in onx.graph.output], list(classes) if classes is not None else None
    )
    return finalize(onx, path=path), mapped


def reference_outputs(
    model: Any, rows: SampleRows, sig: Signature, *, path: str
) -> dict[str, np.ndarray]:
    """The original estimator's outputs on the parity rows."""
    named = getattr(model, "feature_names_in_", None) is not None
    x = rows.frame(sig) if named else rows.matrix(sig)
    wanted = {o.name for o in sig.outputs}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if sig.task != "classification":
                return {"prediction": np.asarray(model.predict(x))}
            out = {"label": labels_from_values(model.predict(x))}
            if "probabilities" in wanted:
                out["probabilities"] = np.asarray(model.predict_proba(x))
            return out
    except Exception as exc:  # the estimator's own error on these rows
        raise InputError(
            f"the original model fails on the {rows.source} parity rows: "
            f"{type(exc).__name__}: {exc}",
            path=path,
            hint="pass --sample with a few real rows (CSV/Parquet) the model accepts",
        ) from exc


def walk(model: Any) -> Iterator[Any]:
    """The estimator and every estimator nested in pipelines, column transformers, unions."""
    yield model
    children: list[Any] = []
    if hasattr(model, "steps"):
        children = [s for _, s in model.steps]
    elif hasattr(model, "transformers_"):
        children = [t for _, t, _ in model.transformers_]
    elif hasattr(model, "transformer_list"):
        children = [t for _, t in model.transformer_list]
    for child in children:
        if not isinstance(child, str) and child is not None:
            yield from walk(child)


def final_estimator(model: Any) -> Any:
    while hasattr(model, "steps") and model.steps:
        model = model.steps[-1][1]
    return model


def _options(model: Any) -> dict[int, dict[str, Any]] | None:
    from sklearn.base import is_classifier

    final = final_estimator(model)
    if not is_classifier(final):
        return None
    try:
        from skl2onnx._supported_operators import sklearn_operator_name_map
        from skl2onnx.common._registration import get_converter

        allowed = get_converter(sklearn_operator_name_map[type(final)]).get_allowed_options()
    except (KeyError, ValueError, AttributeError, RuntimeError):
        return None
    if allowed and "zipmap" in allowed:
        return {id(final): {"zipmap": False}}
    return None


def _is_booster(est: Any) -> bool:
    return type(est).__module__.split(".")[0] in ("xgboost", "lightgbm")


def register_boosters(model: Any) -> None:
    """Teach skl2onnx the XGBoost/LightGBM sklearn wrappers found in ``model``."""
    kinds = {type(e) for e in walk(model) if _is_booster(e)}
    if not kinds:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    for kind in kinds:
        if kind.__module__.startswith("xgboost"):
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost  # type: ignore[import-untyped, unused-ignore]

            converter: Any = convert_xgboost
        else:
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (  # type: ignore[import-untyped, unused-ignore]
                convert_lightgbm,
            )

            converter = convert_lightgbm
        classifier = is_classifier(kind())
        update_registered_converter(
            kind,
            f"Modelcrate{kind.__name__}",
            calculate_linear_classifier_output_shapes
            if classifier
            else calculate_linear_regressor_output_shapes,
            converter,
            options={"nocl": [True, False], "zipmap": [True, False, "columns"]}
            if classifier
            else None,
        )


def feature_ranges(model: Any, names: list[str]) -> dict[int, tuple[float, float]]:
    """Input-column value ranges the model knows: tree split thresholds of a bare tree model,
    or the statistics of a scaler that reads the raw columns (mean +- 2 standard deviations)."""
    ranges: dict[int, tuple[float, float]] = {}
    if not hasattr(model, "steps"):
        for feature, threshold in _tree_splits(model):
            lo, hi = ranges.get(feature, (threshold, threshold))
            ranges[feature] = (min(lo, threshold), max(hi, threshold))
        return ranges
    first = model.steps[0][1]
    routed = (
        ct_columns(first, names)
        if type(first).__name__ == "ColumnTransformer"
        else [(list(range(len(names))), first)]
    )
    for idx, trans in routed:
        steps = [t for _, t in trans.steps] if hasattr(trans, "steps") else [trans]
        for step in steps:
            mean, scale = getattr(step, "mean_", None), getattr(step, "scale_", None)
            if mean is not None and scale is not None and np.ndim(mean) == 1:
                if len(mean) == len(idx):
                    for j, m, sd in zip(idx, mean, scale, strict=True):
                        ranges[j] = (float(m - 2 * sd), float(m + 2 * sd))
                break
    return ranges


def _tree_splits(model: Any) -> Iterator[tuple[int, float]]:
    bins = getattr(getattr(model, "_bin_mapper", None), "bin_thresholds_", None)
    if bins is not None:
        for j, thresholds in enumerate(bins):
            if len(thresholds):
                yield j, float(thresholds[0])
                yield j, float(thresholds[-1])
        return
    trees = (
        [model] if hasattr(model, "tree_") else list(np.ravel(getattr(model, "estimators_", [])))
    )
    for tree in trees[:50]:
        inner = getattr(tree, "tree_", None)
        if inner is None:
            continue
        for f, t in zip(inner.feature, inner.threshold, strict=True):
            if f >= 0:
                yield int(f), float(t)
