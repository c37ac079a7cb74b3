"""Signatures derived from the model itself, and the checks a user's signature must pass.

scikit-learn: ``feature_names_in_``/``n_features_in_`` give the columns; a column is a string
column when the encoder or imputer that reads it was fitted on strings (``OneHotEncoder`` /
``OrdinalEncoder`` ``categories_``, ``SimpleImputer`` ``statistics_``), or when the user's
sample holds text in it; ``classes_`` gives the labels. A purely numeric model takes one FP32
``[rows, features]`` tensor named ``input``; a model with string columns takes one input per
column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modelcrate.crate.signature import Column, Output, Signature, Task
from modelcrate.errors import InputError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "apply_override",
    "is_string_dtype",
    "sklearn_signature",
    "tabular_signature",
]

_ENCODERS = ("OneHotEncoder", "OrdinalEncoder")


def tabular_signature(
    names: Sequence[str],
    *,
    task: Task,
    classes: Sequence[object] | None,
    probabilities: bool,
    strings: dict[str, tuple[str, ...] | None] | None = None,
    prediction_dtype: str = "float32",
    targets: int = 1,
    extra: dict[str, str] | None = None,
) -> Signature:
    """A tabular signature: float32 columns except ``strings`` (name -> known categories)."""
    strings = strings or {}
    columns = tuple(
        Column(n, "string", strings[n]) if n in strings else Column(n, "float32") for n in names
    )
    outputs: tuple[Output, ...]
    labels = tuple(str(c) for c in classes) if classes is not None else None
    if task == "classification":
        if labels is None:
            raise ValueError("a classification signature needs classes")
        outputs = (Output("label", "string"),)
        if probabilities:
            outputs += (Output("probabilities", "float32", (len(labels),)),)
    else:
        shape = () if targets == 1 else (targets,)
        outputs = (Output("prediction", prediction_dtype, shape),)  # type: ignore[arg-type]
    return Signature(
        inputs=columns,
        outputs=outputs,
        task=task,
        classes=labels,
        tensor_input=not strings,
        extra=dict(extra or {}),
    )


def sklearn_signature(model: Any, sample: pd.DataFrame | None) -> Signature:
    """Derive the signature of a fitted scikit-learn estimator or pipeline."""
    from sklearn.base import is_classifier, is_regressor

    n = getattr(model, "n_features_in_", None)
    raw_names = getattr(model, "feature_names_in_", None)
    if raw_names is not None:
        names = [str(x) for x in raw_names]
    elif isinstance(n, int):
        names = [f"f{i}" for i in range(n)]
    else:
        raise InputError(
            f"{type(model).__name__} has no n_features_in_: it is not fitted, or too old a "
            "scikit-learn wrote it",
            hint="fit the model with scikit-learn >= 1.0 before saving it",
        )
    strings = string_columns(model, names)
    if sample is not None:
        for name in names:
            if name in sample.columns and is_string_dtype(sample[name]):
                strings.setdefault(name, None)
    if is_classifier(model):
        classes = getattr(model, "classes_", None)
        if classes is None or getattr(classes, "ndim", 1) != 1 or isinstance(classes, list):
            raise InputError(
                f"{type(model).__name__} has no single 1-D classes_ (multi-label or "
                "multi-output classifiers are not supported)",
                hint="serve one classifier per target",
            )
        return tabular_signature(
            names,
            task="classification",
            classes=[c.item() if hasattr(c, "item") else c for c in classes],
            probabilities=hasattr(model, "predict_proba"),
            strings=strings,
        )
    if is_regressor(model):
        targets = _n_targets(model)
        return tabular_signature(
            names, task="regression", classes=None, probabilities=False, strings=strings,
            targets=targets,
        )  # fmt: skip
    from modelcrate.flavors.base import UnsupportedModelError

    raise UnsupportedModelError(
        f"{type(model).__name__} is neither a classifier nor a regressor",
        hint="modelcrate serves classifiers (labels + probabilities) and regressors",
    )


def is_string_dtype(series: Any) -> bool:
    """True for object/string/categorical pandas columns."""
    kind = getattr(series.dtype, "kind", "O")
    return kind in "OUS" or str(series.dtype) in ("category", "string")


def string_columns(model: Any, names: list[str]) -> dict[str, tuple[str, ...] | None]:
    """Columns read by an encoder/imputer fitted on strings -> their known categories."""
    first = _first_step(model)
    found: dict[str, tuple[str, ...] | None] = {}
    if type(first).__name__ == "ColumnTransformer":
        for idx, trans in ct_columns(first, names):
            _mark(found, [names[i] for i in idx], trans)
    else:
        _mark(found, names, first)
    return found


def _first_step(model: Any) -> Any:
    while type(model).__name__ == "Pipeline" and model.steps:
        model = model.steps[0][1]
    return model


def ct_columns(ct: Any, names: list[str]) -> list[tuple[list[int], Any]]:
    mapping = getattr(ct, "_transformer_to_input_indices", None)
    out: list[tuple[list[int], Any]] = []
    for name, trans, cols in getattr(ct, "transformers_", []):
        if isinstance(mapping, dict) and name in mapping:
            idx = [int(i) for i in mapping[name]]
        else:
            idx = _resolve_columns(cols, names)
        out.append((idx, trans))
    return out


def _resolve_columns(cols: Any, names: list[str]) -> list[int]:
    if isinstance(cols, str):
        cols = [cols]
    if isinstance(cols, slice):
        return list(range(len(names)))[cols]
    result: list[int] = []
    items = list(cols) if cols is not None else []
    if items and all(isinstance(c, (bool,)) or type(c).__name__ == "bool" for c in items):
        return [i for i, keep in enumerate(items) if keep]
    for c in items:
        if isinstance(c, str):
            if c in names:
                result.append(names.index(c))
        else:
            result.append(int(c))
    return result


def _mark(found: dict[str, tuple[str, ...] | None], cols: list[str], trans: Any) -> None:
    """Mark ``cols`` as strings if ``trans`` (or a step of it) was fitted on strings."""
    steps = [s for _, s in trans.steps] if type(trans).__name__ == "Pipeline" else [trans]
    for step in steps:
        kind = type(step).__name__
        if kind in _ENCODERS and hasattr(step, "categories_"):
            if len(step.categories_) != len(cols):
                return
            for col, cats in zip(cols, step.categories_, strict=True):
                if getattr(cats, "dtype", None) is not None and cats.dtype.kind in "OUS":
                    found[col] = tuple(str(v) for v in cats if isinstance(v, str))
            return
        stats = getattr(step, "statistics_", None) if kind == "SimpleImputer" else None
        if stats is not None and stats.dtype.kind in "OUS":
            for col in cols:
                found.setdefault(col, None)


def _n_targets(model: Any) -> int:
    final = model
    while type(final).__name__ == "Pipeline":
        final = final.steps[-1][1]
    for attr in ("n_outputs_", "_n_outputs"):
        value = getattr(final, attr, None)
        if isinstance(value, int):
            return value
    coef = getattr(final, "coef_", None)
    if coef is not None and getattr(coef, "ndim", 1) == 2:
        return int(coef.shape[0])
    return 1


def apply_override(derived: Signature, user: Signature | None, *, path: str) -> Signature:
    """The user's signature, after checking that it describes this model; else ``derived``.

    The user may rename columns of a model that knows no feature names, narrow numeric dtypes,
    add categories and ``extra`` notes. Column count, names the model knows, string-vs-number,
    task, classes and output names must match the model.
    """
    if user is None:
        return derived

    def bad(what: str) -> InputError:
        return InputError(
            f"the signature does not match the model: {what}",
            path=path,
            hint="fix the signature file, or drop --signature to use the one derived from "
            f"the model (inputs: {', '.join(derived.feature_names[:12])}"
            + (", ..." if len(derived.inputs) > 12 else "")
            + ")",
        )

    if len(user.inputs) != len(derived.inputs):
        raise bad(f"{len(user.inputs)} input columns, the model takes {len(derived.inputs)}")
    generic = all(c.name == f"f{i}" for i, c in enumerate(derived.inputs))
    for i, (u, d) in enumerate(zip(user.inputs, derived.inputs, strict=True)):
        if not generic and u.name != d.name:
            raise bad(f"input #{i} is named {u.name!r}, the model calls it {d.name!r}")
        if (u.dtype == "string") != (d.dtype == "string"):
            raise bad(f"column {u.name!r} is {u.dtype}, the model reads it as {d.dtype}")
    if len(set(user.feature_names)) != len(user.inputs):
        raise bad("column names are not unique")
    if user.task != derived.task:
        raise bad(f"task is {user.task!r}, the model is a {derived.task} model")
    if derived.classes is not None and user.classes != derived.classes:
        raise bad(f"classes {list(user.classes or [])} != the model's {list(derived.classes)}")
    want = {o.name for o in derived.outputs}
    got = {o.name for o in user.outputs}
    if not got or not got <= want:
        raise bad(f"outputs {sorted(got)}; this model produces {sorted(want)}")
    if user.tensor_input != derived.tensor_input:
        raise bad(
            f"tensor_input is {user.tensor_input}; the model takes "
            + ("one [rows, features] tensor" if derived.tensor_input else "one input per column")
        )
    if user.tensor_input and user.tensor_name != derived.tensor_name:
        raise bad(f"tensor_name {user.tensor_name!r}; the model's input is {derived.tensor_name!r}")
    return user
