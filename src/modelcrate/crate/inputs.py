"""What the user hands to ``build`` besides the model: its name, sample rows, signature file.

Each reader turns a bad input into an InputError naming the file and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from modelcrate.crate.canonical import NAME_RE
from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError


def crate_name_for(src: Path, name: str | None) -> str:
    """The given name (validated), or one derived from the file name."""
    if name is not None:
        if not NAME_RE.match(name):
            raise InputError(
                f"invalid crate name {name!r}",
                hint="use lowercase letters, digits, '.', '_' or '-', starting with a letter "
                "or digit (at most 128 characters)",
            )
        return name
    stem = src.name.split(".")[0] if not src.name.startswith(".") else src.stem
    derived = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).lstrip("._-")[:128]
    return derived or "model"


def read_source(src: Path) -> bytes:
    if src.is_dir():
        raise InputError(
            "expected a model file, got a folder",
            path=str(src),
            hint="pass the model file itself (.pkl, .joblib, .onnx, .json, .ubj, .txt)",
        )
    try:
        return src.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(
            "model file not found", path=str(src), hint="check the path and try again"
        ) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read the model file: {exc.strerror or exc}",
            path=str(src),
            hint="check the file's permissions",
        ) from exc


def read_sample(path: Path) -> Any:
    """A pandas DataFrame of sample rows from CSV or Parquet."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InputError(
            "unsupported sample file type", path=str(path), hint="pass a .csv or .parquet file"
        )
    if not path.is_file():
        raise InputError("sample file not found", path=str(path), hint="check the path")
    try:
        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a bad file
        raise InputError(
            f"cannot read the sample file: {exc}",
            path=str(path),
            hint="pass a CSV with a header row, or a Parquet file, holding the model's features",
        ) from exc
    if len(df) == 0:
        raise InputError(
            "the sample file has no rows", path=str(path), hint="add a few representative rows"
        )
    return df


def read_signature(path: Path) -> Signature:
    """A signature from a JSON or YAML file (the format of a crate's signature.json)."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the signature file: {exc.strerror or exc}",
            path=str(path),
            hint="check the path",
        ) from exc
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise TypeError("the document must be a mapping")
        return Signature.from_dict(raw)
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise InputError(
            f"invalid signature file: {exc}",
            path=str(path),
            hint="write it like the signature.json of a built crate: task, inputs [{name, "
            "dtype}], outputs [{name, dtype, shape}], classes",
        ) from exc
