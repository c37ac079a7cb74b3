"""Parity: the converted artifact, run by the serving runtime, against the original model.

Rows come from the user's ``--sample`` (up to :data:`MAX_SAMPLE_ROWS`) or are synthesized from
the signature: numeric columns from a seeded RNG, spread over the split thresholds of tree
models when they are known; string columns from the known categories. Numeric values are
rounded to float32 first, since that is what the service receives, so both sides see the same
numbers.

Tolerances (stated in every report):

* classifiers: probabilities ``max |converted - original| <= tolerance`` (:data:`ONNX_TOLERANCE`
  for float32 ONNX graphs, :data:`NATIVE_TOLERANCE` for native/skops runtimes), and 100 % label
  agreement except exact ties (rows whose two best original probabilities are within
  ``2 * tolerance`` of each other);
* regressors: ``max |diff| <= REGRESSION_RTOL * max(1, max |original|)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors.base import Parity, ParityError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "NATIVE_TOLERANCE",
    "ONNX_TOLERANCE",
    "REGRESSION_RTOL",
    "SampleRows",
    "compare",
    "sample_rows",
]

ONNX_TOLERANCE = 1e-4
NATIVE_TOLERANCE = 1e-6
REGRESSION_RTOL = 1e-4
SYNTH_ROWS = 200
MAX_SAMPLE_ROWS = 1000
SEED = 20240531
_WORST = 5


@dataclass(frozen=True)
class SampleRows:
    """Parity rows, one array per signature column (float32 numbers, ``str`` objects)."""

    columns: dict[str, np.ndarray]
    rows: int
    source: str  # "sample" | "synthesized"

    def missing(self) -> np.ndarray:
        """Rows with a missing (NaN) number."""
        mask = np.zeros(self.rows, dtype=bool)
        for values in self.columns.values():
            if values.dtype.kind == "f":
                mask |= np.isnan(values)
        return mask

    def subset(self, keep: np.ndarray) -> SampleRows:
        return SampleRows(
            {k: v[keep] for k, v in self.columns.items()}, int(keep.sum()), self.source
        )

    def inputs(self) -> dict[str, np.ndarray]:
        """The runtime's column inputs."""
        return dict(self.columns)

    def matrix(self, signature: Signature) -> np.ndarray:
        """float64 (or object, with strings) ``[rows, features]`` for a model without names."""
        cols = [self.columns[c.name] for c in signature.inputs]
        if any(c.dtype == "string" for c in signature.inputs):
            return np.column_stack(cols).astype(object)
        return np.column_stack(cols).astype(np.float64)

    def frame(self, signature: Signature) -> pd.DataFrame:
        """A DataFrame (float64 numbers) for a model fitted on named columns."""
        import pandas as pd  # type: ignore[import-untyped, unused-ignore]

        return pd.DataFrame(
            {
                c.name: self.columns[c.name]
                if c.dtype == "string"
                else self.columns[c.name].astype(np.float64)
                for c in signature.inputs
            }
        )


def sample_rows(
    signature: Signature,
    sample: pd.DataFrame | None,
    *,
    ranges: Mapping[int, tuple[float, float]] | None = None,
    missing: bool = False,
) -> SampleRows:
    """The user's sample (checked against the signature) or synthesized rows."""
    if sample is not None:
        return _from_sample(signature, sample)
    rng = np.random.default_rng(SEED)
    n = SYNTH_ROWS
    columns: dict[str, np.ndarray] = {}
    for j, col in enumerate(signature.inputs):
        if col.dtype == "string":
            cats = list(col.categories or ()) or ["a", "b", "c"]
            columns[col.name] = np.array([cats[i] for i in rng.integers(0, len(cats), n)], object)
            continue
        lo_hi = (ranges or {}).get(j)
        if lo_hi is not None and lo_hi[1] > lo_hi[0]:
            lo, hi = lo_hi
            pad = 0.1 * (hi - lo)
            values = rng.uniform(lo - pad, hi + pad, n)
        else:
            values = rng.normal(0.0, 1.0, n)
        if col.dtype in ("int32", "int64", "bool"):
            values = np.round(values)
        if missing:
            values[rng.random(n) < 0.05] = np.nan
        columns[col.name] = values.astype(np.float32)
    return SampleRows(columns, n, "synthesized")


def _from_sample(signature: Signature, sample: pd.DataFrame) -> SampleRows:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    missing = [c.name for c in signature.inputs if c.name not in sample.columns]
    if missing:
        raise InputError(
            f"the sample lacks the model's columns {missing[:10]}",
            hint=f"the sample needs the columns {signature.feature_names[:12]}",
        )
    frame = sample.head(MAX_SAMPLE_ROWS)
    if len(frame) == 0:
        raise InputError("the sample has no rows", hint="pass a sample with a few rows")
    columns: dict[str, np.ndarray] = {}
    for col in signature.inputs:
        series = frame[col.name]
        if col.dtype == "string":
            columns[col.name] = np.array(
                ["" if pd.isna(v) else str(v) for v in series.tolist()], dtype=object
            )
            continue
        try:
            columns[col.name] = pd.to_numeric(series).to_numpy(dtype=np.float32, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"sample column {col.name!r} is not numeric: {exc}",
                hint="the model reads this column as a number; fix the sample",
            ) from exc
    return SampleRows(columns, len(frame), "sample")


def compare(
    signature: Signature,
    reference: Mapping[str, np.ndarray],
    converted: Mapping[str, np.ndarray],
    rows: SampleRows,
    *,
    tolerance: float,
    path: str,
) -> Parity:
    """Compare outputs; returns :class:`Parity` or raises :class:`ParityError`."""
    n = rows.rows
    per_row = np.zeros(n)
    notes: list[str] = []
    agreement = 1.0
    bad_labels = np.zeros(n, dtype=bool)
    if signature.task == "classification":
        ref_l = np.asarray(reference["label"]).astype(str)
        got_l = np.asarray(converted["label"]).astype(str)
        same = ref_l == got_l
        agreement = float(same.mean()) if n else 1.0
        ties = np.zeros(n, dtype=bool)
        if "probabilities" in reference and "probabilities" in converted:
            ref_p = np.asarray(reference["probabilities"], dtype=np.float64)
            per_row = _diff(ref_p, np.asarray(converted["probabilities"], np.float64))
            if ref_p.shape[1] >= 2:
                top = np.sort(ref_p, axis=1)
                ties = top[:, -1] - top[:, -2] <= 2 * tolerance
            what = "probabilities"
        else:
            what = "labels only (no probabilities)"
        bad_labels = ~same & ~ties
        notes.append(
            f"labels agree on {agreement:.2%} of rows"
            + (
                f" ({int((~same & ties).sum())} differ at exact ties)"
                if (~same & ties).any()
                else ""
            )
        )
        limit = tolerance
    else:
        ref_v = np.asarray(reference["prediction"], dtype=np.float64).reshape(n, -1)
        per_row = _diff(ref_v, np.asarray(converted["prediction"], np.float64).reshape(n, -1))
        scale = max(1.0, float(np.nanmax(np.abs(ref_v)))) if ref_v.size else 1.0
        limit = tolerance * scale
        what = "predictions"
        notes.append(f"tolerance {tolerance:g} x max(1, max |prediction| = {scale:.4g})")
    max_diff = float(per_row.max()) if n else 0.0
    passed = max_diff <= limit and not bad_labels.any()
    head = (
        f"{n} {rows.source} rows; {what}: max |converted - original| = {max_diff:.3g} "
        f"(tolerance {limit:.3g}); " + "; ".join(notes)
    )
    details = head
    if not passed:
        worst = _worst(
            per_row, bad_labels, reference=reference, converted=converted, rows=rows,
            signature=signature,
        )  # fmt: skip
        details = f"{head}\n{worst}"
    parity = Parity(
        rows=n,
        tolerance=limit,
        max_abs_diff=max_diff,
        label_agreement=agreement,
        passed=passed,
        details=details,
    )
    if not passed:
        raise ParityError(
            "the converted model does not reproduce the original's predictions: " + head,
            parity=parity,
            path=path,
            hint="check that the sample matches what the model was trained on; if it does, the "
            "converter mishandles this estimator: report it, and export the model to ONNX "
            "yourself meanwhile\n" + parity.details,
        )
    return parity


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        return np.full(a.shape[0], np.inf)
    both_nan = np.isnan(a) & np.isnan(b)
    d = np.where(both_nan, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return d.max(axis=1) if d.ndim == 2 and d.shape[1] else d.reshape(len(d))


def _worst(
    per_row: np.ndarray,
    bad_labels: np.ndarray,
    *,
    reference: Mapping[str, np.ndarray],
    converted: Mapping[str, np.ndarray],
    rows: SampleRows,
    signature: Signature,
) -> str:
    order = np.lexsort((-per_row, ~bad_labels))[:_WORST]
    lines = ["worst rows:"]
    for i in order:
        parts = [f"  row {int(i)}: |diff| {per_row[i]:.3g}"]
        for key in ("label", "prediction"):
            if key in reference and key in converted:
                ref = np.asarray(reference[key]).reshape(rows.rows, -1)[i]
                got = np.asarray(converted[key]).reshape(rows.rows, -1)[i]
                parts.append(f"{key} original={_fmt(ref)} converted={_fmt(got)}")
        values = ", ".join(
            f"{c.name}={_fmt(rows.columns[c.name][i])}" for c in signature.inputs[:8]
        )
        parts.append(f"inputs: {values}" + (", ..." if len(signature.inputs) > 8 else ""))
        lines.append("; ".join(parts))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        v = arr[0]
        return repr(v) if isinstance(v, str) else f"{v:.6g}" if arr.dtype.kind == "f" else str(v)
    return "[" + ", ".join(_fmt(v) for v in arr[:4]) + (", ...]" if arr.size > 4 else "]")
