"""``modelcrate serve`` and ``modelcrate predict``: a crate as a service, or on a file.

Both take ``NAME[:VERSION]`` (a crate in the store) or ``DIR`` (a crate folder). The serving
stack (FastAPI, Uvicorn, NumPy) is imported inside the commands, never at CLI start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Crate store folder (default: $MODELCRATE_HOME or ~/.modelcrate)."
    ),
]
RefArgument = Annotated[
    str, typer.Argument(help="NAME[:VERSION] of a crate in the store, or a crate folder.")
]


def resolve_crate(ref: str, store: Path | None = None) -> Path:
    """The crate folder meant by ``ref``: a folder holding ``crate.yaml``, a path (which must
    be a crate folder), or ``NAME[:VERSION]`` looked up in the store."""
    candidate = Path(ref).expanduser()
    if (candidate / "crate.yaml").is_file():
        return candidate
    if "/" in ref or os.sep in ref or ref.startswith(".") or candidate.is_absolute():
        if not candidate.exists():
            raise InputError(
                "no such crate folder",
                path=ref,
                hint="pass a folder made by 'modelcrate build', or NAME[:VERSION] from the store",
            )
        raise InputError(
            "not a crate: crate.yaml is missing",
            path=str(candidate / "crate.yaml"),
            hint="pass a folder made by 'modelcrate build', or NAME[:VERSION] from the store",
        )
    from modelcrate.crate.store import Store

    return Store.default(store).resolve(ref)


def serve(
    ref: RefArgument,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    store: StoreOption = None,
    log_level: Annotated[
        str, typer.Option(help="Uvicorn log level: critical|error|warning|info|debug.")
    ] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve a crate: typed POST /predict, Open Inference Protocol V2 under /v2, /docs,
    /healthz, /readyz and Prometheus /metrics."""
    import uvicorn

    from modelcrate.crate.layout import verify_crate
    from modelcrate.serve.app import CRATE_ENV, build_app
    from modelcrate.serve.model import open_predictor, read_model_info

    crate_dir = resolve_crate(ref, store).resolve()
    info = read_model_info(crate_dir)
    # Load (one worker) or verify (workers load their own) now: a bad crate fails here, with a
    # clear error and exit 2, before anything listens.
    if workers == 1:
        predictor = open_predictor(info)
    else:
        verify_crate(crate_dir)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    _stderr().print(
        f"[bold]{info.name}[/bold] [dim]{info.version}[/dim] ({info.flavor}, {info.runtime})\n"
        f"  typed API  POST {url}/predict   docs {url}/docs\n"
        f"  V2         POST {url}/v2/models/{info.name}/infer\n"
        f"  health     {url}/healthz  {url}/readyz  metrics {url}/metrics",
        highlight=False,
        soft_wrap=True,
    )
    common = {"host": host, "port": port, "log_level": log_level, "access_log": access_log}
    if workers == 1:
        app = build_app(info, lambda: predictor)
        uvicorn.run(app, lifespan="on", **common)  # type: ignore[arg-type]
    else:
        os.environ[CRATE_ENV] = str(crate_dir)
        uvicorn.run(
            "modelcrate.serve.app:create_app_from_env",
            factory=True,
            workers=workers,
            lifespan="on",
            **common,  # type: ignore[arg-type]
        )


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
    """Add ``serve`` and ``predict`` to the ``modelcrate`` command line."""
    app.command()(serve)
    app.command()(predict)
