"""Records in, predictions out: the one conversion path of ``/predict`` and ``modelcrate predict``.

A :class:`Codec` is built once per model. It validates JSON bytes (or Python records read from a
CSV/Parquet file) against the signature's record type, turns the records into the arrays the
predictor takes (one NumPy conversion per request), and turns the predictor's arrays back into
one JSON-ready prediction per record: the label, the probabilities keyed by class label, or the
regression value. The server and the CLI call exactly these methods, so they answer alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelcrate.errors import InputError
from modelcrate.serve.validation import INVALID_JSON, TooManyRecords, loads

if TYPE_CHECKING:
    from modelcrate.crate.signature import Signature
    from modelcrate.serve.schema import PredictSchema

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32

NUMPY_DTYPE: dict[str, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
    "string": object,
}
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

Record = dict[str, Any]


class PredictionFailed(RuntimeError):
    """The predictor raised or returned something that does not fit the signature.

    ``client_error`` is True when the predictor refused the input itself (an ``InputError``):
    the request was bad (422/400), not the server (500).
    """

    def __init__(self, message: str, *, client_error: bool = False) -> None:
        super().__init__(message)
        self.client_error = client_error


class Codec:
    """Validation and conversion for one signature; immutable after construction."""

    def __init__(self, signature: Signature, model_name: str) -> None:
        self.signature = signature
        self._model_name = model_name
        self._schema: PredictSchema | None = None
        self._names = tuple(signature.feature_names)
        self._dtypes = tuple(NUMPY_DTYPE[c.dtype] for c in signature.inputs)
        self._outputs = tuple(signature.outputs)
        self._classes = tuple(signature.classes) if signature.classes else None
        # the fast path of parse_matrix: models whose inputs are all float columns, one tensor
        floats = all(c.dtype in ("float32", "float64") for c in signature.inputs)
        self._matrix = signature.tensor_input and floats and len(self._names) > 0
        self._float32 = any(c.dtype == "float32" for c in signature.inputs)

    # -- requests --------------------------------------------------------------------------

    @property
    def schema(self) -> PredictSchema:
        """The record validators and JSON Schemas (Pydantic), compiled on first use: an
        all-float model's valid requests never need them (:meth:`parse_matrix`)."""
        if self._schema is None:
            from modelcrate.serve.schema import build_predict_schema

            self._schema = build_predict_schema(self.signature, self._model_name)
        return self._schema

    @property
    def fast_path(self) -> bool:
        """True when :meth:`parse_matrix` can take valid requests without the validators."""
        return self._matrix

    def parse_json(self, body: bytes) -> tuple[list[Record], bool]:
        """Validate a request body; returns the records and whether it was a single record.

        Raises ``pydantic.ValidationError`` whose locations are ``(index, field)`` for a list
        and ``(field,)`` for a single record.
        """
        if body.lstrip()[:1] == b"[":
            return self.schema.many.validate_json(body), False
        return [self.schema.one.validate_json(body)], True

    def parse_request(
        self, body: bytes, max_rows: int = 0
    ) -> tuple[dict[str, np.ndarray], int, bool]:
        """A ``/predict`` body -> ``(inputs, rows, single)``, with bounded work: at most
        ``max_rows`` records (0: no limit), at most ``serve.validation.MAX_ERRORS`` errors
        found and echoed. Raises ``serve.validation.TooManyRecords`` or ``InvalidRecords``.

        All-float models take valid bodies straight to their tensor (:meth:`parse_matrix`);
        anything else, or anything that path does not accept, goes to the validator."""
        doc = loads(body)
        if type(doc) is list and max_rows and len(doc) > max_rows:
            raise TooManyRecords(len(doc), max_rows)
        if self._matrix and doc is not INVALID_JSON:
            fast = self._matrix_of(doc)
            if fast is not None:
                return fast
        records, single = self.schema.validator.validate_json(body, max_rows, doc)
        return self.to_inputs(records), len(records), single

    def parse_matrix(self, body: bytes) -> tuple[dict[str, np.ndarray], int, bool] | None:
        """The fast path of :meth:`parse_json` for an all-float, one-tensor model: the input
        tensor straight from JSON when every record is exactly what the validator accepts
        (every field, no other, each a number or null, finite, within float32 where the column
        is float32); None otherwise, and the caller validates (and reports) as usual. Returns
        ``(inputs, rows, single)``. Same values as ``to_inputs(parse_json(body))``."""
        if not self._matrix:
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return self._matrix_of(doc)

    def _matrix_of(self, doc: Any) -> tuple[dict[str, np.ndarray], int, bool] | None:
        single = type(doc) is dict
        records = [doc] if single else doc
        if type(records) is not list or not records:
            return None
        names = self._names
        width = len(names)
        dtype = NUMPY_DTYPE[self.signature.tensor_dtype]
        # within float32 where a column or the tensor is float32: the conversion cannot overflow
        high = FLOAT32_MAX if self._float32 or dtype is np.float32 else math.inf
        low = -high
        rows = []
        try:
            for record in records:
                if type(record) is not dict or len(record) != width:
                    return None
                row = [record[n] for n in names]
                for v in row:  # a number in range, or null; anything else: the validator says
                    if type(v) is float:
                        if not low <= v <= high:
                            return None
                    elif v is not None and (type(v) is not int or not low <= v <= high):
                        return None
                rows.append(row)
            matrix = np.array(rows, dtype=dtype)  # as to_inputs converts (None: NaN)
        except (KeyError, OverflowError):
            return None
        return {self.signature.tensor_name: matrix}, len(rows), single

    def validate_records(self, records: Sequence[Mapping[str, Any]]) -> list[Record]:
        """Validate already-decoded records (e.g. rows of a table) exactly like a JSON list."""
        return self.schema.many.validate_python(records)  # type: ignore[no-any-return]

    def validate_bounded(self, records: list[Any], max_rows: int = 0) -> list[Record]:
        """:meth:`validate_records` for a server: bounded work and errors (see
        :meth:`parse_request`); raises ``TooManyRecords`` or ``InvalidRecords``."""
        return self.schema.validator.validate_python(records, max_rows)

    def to_inputs(self, records: Sequence[Record]) -> dict[str, np.ndarray]:
        """Validated records -> the predictor's input arrays (one conversion per request)."""
        sig = self.signature
        names = self._names
        if sig.tensor_input:
            rows = [[r[n] for n in names] for r in records]
            return {sig.tensor_name: np.array(rows, dtype=NUMPY_DTYPE[sig.tensor_dtype])}
        return {
            n: np.array([r[n] for r in records], dtype=dt)
            for n, dt in zip(names, self._dtypes, strict=True)
        }

    def warmup_inputs(self) -> dict[str, np.ndarray]:
        """One synthetic record (zeros, first known category): proves the model can predict."""
        record: Record = {}
        for col in self.signature.inputs:
            if col.dtype == "string":
                record[col.name] = col.categories[0] if col.categories else ""
            elif col.dtype == "bool":
                record[col.name] = False
            else:
                record[col.name] = 0
        return self.to_inputs([record])

    # -- responses -------------------------------------------------------------------------

    def to_predictions(self, outputs: Mapping[str, np.ndarray], rows: int) -> list[Record]:
        """Predictor outputs -> one dict per record, ready for ``orjson`` (NumPy scalars kept)."""
        columns: list[tuple[str, list[Any]]] = []
        for out in self._outputs:
            arr = checked_output(outputs, out.name, rows)
            if out.name == "probabilities" and self._classes is not None:
                classes = self._classes
                if arr.ndim != 2 or arr.shape[1] != len(classes):
                    raise PredictionFailed(
                        f"output 'probabilities' has shape {list(arr.shape)}; "
                        f"expected [{rows}, {len(classes)}] for classes {list(classes)}"
                    )
                values: list[Any] = [dict(zip(classes, row, strict=False)) for row in arr]
            elif out.dtype == "string" or arr.dtype.kind in "OUS":
                values = [str(v) for v in arr.tolist()]
            else:
                values = list(arr)  # NumPy scalars (or rows): orjson writes them natively
            columns.append((out.name, values))
        return [{name: values[i] for name, values in columns} for i in range(rows)]

    @staticmethod
    def dumps(doc: object) -> bytes:
        """The JSON bytes of a response: NumPy scalars and arrays serialised natively."""
        return orjson.dumps(doc, option=JSON_OPTIONS)


def checked_output(outputs: Mapping[str, np.ndarray], name: str, rows: int) -> np.ndarray:
    """The predictor's array ``name``, checked to hold one entry per input row."""
    try:
        arr = np.asarray(outputs[name])
    except KeyError:
        raise PredictionFailed(
            f"the predictor returned no output {name!r} (it returned {sorted(outputs)})"
        ) from None
    if arr.ndim == 0 or arr.shape[0] != rows:
        raise PredictionFailed(
            f"output {name!r} has shape {list(arr.shape)}; expected {rows} row(s) first"
        )
    return arr


def predict_arrays(predictor: Any, inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """Call the predictor; any failure becomes :class:`PredictionFailed` with the cause."""
    try:
        result = predictor.predict(inputs)
    except InputError as exc:
        raise PredictionFailed(exc.message, client_error=True) from exc
    except Exception as exc:
        raise PredictionFailed(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Mapping):
        raise PredictionFailed(f"the predictor returned {type(result).__name__}, not a mapping")
    for name, value in result.items():
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and arr.ndim and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise PredictionFailed(
                f"the model's {name!r} is not a number (NaN or infinite) for row(s) "
                f"{bad[:10].tolist()}: their inputs hold missing or extreme values this model "
                "cannot handle",
                client_error=True,
            )
    return result
