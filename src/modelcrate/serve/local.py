"""In-process predictions from a file, through the server's own conversion path.

``predict_file`` reads JSON (one record or a list, exactly the ``/predict`` body), CSV or
Parquet (one record per row; columns the model does not take are ignored), validates the
records with the same compiled types as the server, predicts, and returns the same
predictions ``POST /predict`` would answer for the same records.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelcrate.errors import InputError
from modelcrate.serve.codec import Codec, PredictionFailed, Record, predict_arrays
from modelcrate.serve.model import ModelInfo, open_predictor, read_model_info

CHUNK_ROWS = 65_536  # rows per predictor call: bounds the memory of the arrays
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
INPUT_SUFFIXES = (".json", *TABLE_SUFFIXES)
SHOWN_ERRORS = 5


@dataclass(frozen=True)
class LocalPredictions:
    """What ``modelcrate predict`` computed: one prediction per input record."""

    info: ModelInfo
    predictions: list[Record]
    single: bool  # the input was one JSON record (the answer is then one object)

    def to_json(self) -> bytes:
        """The same JSON bytes ``POST /predict`` answers for the same input."""
        return Codec.dumps(self.predictions[0] if self.single else self.predictions)


def predict_file(crate_dir: Path, input_path: Path) -> LocalPredictions:
    """Predict every record of ``input_path`` with the crate at ``crate_dir``."""
    info = read_model_info(crate_dir)
    codec = Codec(info.signature, info.name)
    records, single = read_records(input_path, codec)
    predictor = open_predictor(info)
    predictions: list[Record] = []
    for start in range(0, len(records), CHUNK_ROWS):
        chunk = records[start : start + CHUNK_ROWS]
        try:
            outputs = predict_arrays(predictor, codec.to_inputs(chunk))
            predictions.extend(codec.to_predictions(outputs, len(chunk)))
        except PredictionFailed as exc:
            raise InputError(
                f"the model could not predict rows {start}..{start + len(chunk) - 1}: {exc}",
                path=str(input_path),
                hint="check the values against the model's input schema ('modelcrate show')",
            ) from exc
    return LocalPredictions(info=info, predictions=predictions, single=single)


def read_records(path: Path, codec: Codec) -> tuple[list[Record], bool]:
    """Read and validate the records of a JSON, CSV or Parquet file."""
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise InputError(
            f"cannot read {suffix or 'a file without extension'} input",
            path=str(path),
            hint="give a .json (a record or a list of records), .csv or .parquet file",
        )
    try:
        if suffix == ".json":
            return codec.parse_json(_read_bytes(path))
        return codec.validate_records(_table_records(path, codec)), False
    except ValidationError as exc:
        raise InputError(
            _describe(exc, table=suffix != ".json"),
            path=str(path),
            hint="fix these values; the model's input schema is in its crate "
            "('modelcrate show NAME') and at /docs of 'modelcrate serve'",
        ) from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the input file: {exc.strerror or exc}",
            path=str(path),
            hint="check the path and its permissions",
        ) from exc


def _table_records(path: Path, codec: Codec) -> list[Mapping[str, Any]]:
    try:
        pd: Any = importlib.import_module("pandas")
    except ImportError as exc:  # pragma: no cover - the serving image has no pandas
        raise InputError(
            "reading CSV or Parquet needs pandas",
            path=str(path),
            hint="install modelcrate[build], or give the records as JSON",
        ) from exc
    names = codec.signature.feature_names
    strings = {c.name: str for c in codec.signature.inputs if c.dtype == "string"}
    if not path.is_file():
        raise InputError("the input file does not exist", path=str(path), hint="check the path")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=strings)
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:
        raise InputError(
            f"cannot read the table: {type(exc).__name__}: {exc}",
            path=str(path),
            hint="check that the file is a valid CSV (with a header row) or Parquet file",
        ) from exc
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise InputError(
            "the table lacks the column(s) " + ", ".join(repr(n) for n in missing),
            path=str(path),
            hint="the model takes the columns " + ", ".join(repr(n) for n in names),
        )
    if frame.empty:
        raise InputError("the table has no rows", path=str(path), hint="give at least one row")
    frame = frame[names]
    # an empty cell is a missing value: null, as in JSON (NaN is not a number a record takes)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")  # type: ignore[no-any-return]


def _describe(exc: ValidationError, *, table: bool) -> str:
    errors = exc.errors(include_url=False, include_context=False)
    parts = []
    for e in errors[:SHOWN_ERRORS]:
        parts.append(_where(e["loc"], table=table) + f": {e['msg']} (got {e.get('input')!r})")
    more = f"; and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
    return f"{len(errors)} invalid value(s): " + "; ".join(parts) + more


def _where(loc: Sequence[str | int], *, table: bool) -> str:
    if not loc:
        return "the input"
    if isinstance(loc[0], int):
        head = f"row {loc[0] + 1}" if table else f"record {loc[0]}"
        rest = loc[1:]
    else:
        head, rest = "the record", loc
    return head + "".join(f", field {part!r}" for part in rest)


def table_bytes(result: LocalPredictions, suffix: str) -> bytes:
    """The predictions as a CSV or Parquet table: one row per record, nested fields flattened
    (``label``, ``probabilities.<class>``, ...)."""
    import io

    pd: Any = importlib.import_module("pandas")
    frame = pd.json_normalize(result.predictions)
    if suffix == ".csv":
        return bytes(frame.to_csv(index=False).encode("utf-8"))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
