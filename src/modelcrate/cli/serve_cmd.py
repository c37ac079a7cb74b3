"""``modelcrate predict``: a crate's predictions on a file, in process (``serve`` is the click
command of ``serve_click``, kept free of Typer for start-up time).

It takes ``NAME[:VERSION]`` (a crate in the store) or ``DIR`` (a crate folder). The serving
stack (NumPy, ONNX Runtime) is imported inside the command, never at CLI start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

from modelcrate._fs import atomic_write_bytes
from modelcrate.cli.refs import resolve_crate
from modelcrate.errors import InputError

__all__ = ["RefArgument", "StoreOption", "predict", "register", "resolve_crate"]

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Crate store folder (default: $MODELCRATE_HOME or ~/.modelcrate)."
    ),
]
RefArgument = Annotated[
    str, typer.Argument(help="NAME[:VERSION] of a crate in the store, or a crate folder.")
]


def predict(
    ref: RefArgument,
    input_path: Annotated[
        Path,
        typer.Option(
            "--input", "-i", help="Records to predict: .json (a record or a list), .csv, .parquet."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write to FILE (.json, .csv or .parquet) instead of stdout."
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Predict in process, with the server's validation and conversion: the same answers as
    POST /predict."""
    from modelcrate.serve.local import predict_file, table_bytes

    crate_dir = resolve_crate(ref, store)
    result = predict_file(crate_dir, input_path)
    if output is None:
        sys.stdout.buffer.write(result.to_json() + b"\n")
        sys.stdout.flush()
        return
    suffix = output.suffix.lower()
    if suffix == ".json":
        data = result.to_json() + b"\n"
    elif suffix in (".csv", ".parquet", ".pq"):
        data = table_bytes(result, ".csv" if suffix == ".csv" else ".parquet")
    else:
        raise InputError(
            f"cannot write {suffix or 'a file without extension'} output",
            path=str(output),
            hint="name the output .json, .csv or .parquet",
        )
    atomic_write_bytes(output, data)
    _stderr().print(
        f"{len(result.predictions)} prediction(s) by {result.info.name} "
        f"{result.info.short_version} written to {output}",
        highlight=False,
        soft_wrap=True,
    )


def _stderr() -> Console:
    from rich.console import Console  # Rich is imported only when there is something to show

    return Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the ``modelcrate`` command line."""
    app.command()(predict)
