"""``modelcrate serve`` and ``modelcrate predict``: a crate as a service, or on a file.

Both take ``NAME[:VERSION]`` (a crate in the store) or ``DIR`` (a crate folder). The serving
stack (FastAPI, Uvicorn, NumPy) is imported inside the commands, never at CLI start-up.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from types import FrameType

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
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body, in bytes (413 above; 0: no limit).", min=0)
    ] = 8 * 1024 * 1024,
    max_concurrency: Annotated[
        int,
        typer.Option(
            help="Requests handled at once per worker (503 with Retry-After above; 0: no limit).",
            min=0,
        ),
    ] = 256,
    timeout_s: Annotated[
        float, typer.Option(help="Time limit of one request, in seconds (504; 0: none).", min=0)
    ] = 30.0,
    graceful_timeout_s: Annotated[
        float,
        typer.Option(
            help="On SIGTERM, stop accepting and wait this long for accepted requests to finish.",
            min=0,
        ),
    ] = 20.0,
) -> None:
    """Serve a crate: typed POST /predict, Open Inference Protocol V2 under /v2, /docs,
    /healthz, /readyz and Prometheus /metrics."""
    import uvicorn

    from modelcrate.crate.layout import verify_crate
    from modelcrate.serve.app import CRATE_ENV, build_app
    from modelcrate.serve.limits import LIMITS_ENV, Limits
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
    limits = Limits(max_body_bytes, max_concurrency, timeout_s)
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "log_config": _log_config(log_level),
        "timeout_graceful_shutdown": graceful_timeout_s,
    }
    # Uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found: a no-op one makes a graceful shutdown exit 0, as service managers expect.
    previous = signal.signal(signal.SIGTERM, _ignore_signal)
    try:
        if workers == 1:
            app = build_app(info, lambda: predictor, limits)
            uvicorn.run(app, lifespan="on", **common)  # type: ignore[arg-type]
        else:
            os.environ[CRATE_ENV] = str(crate_dir)
            os.environ[LIMITS_ENV] = limits.to_env()
            uvicorn.run(
                "modelcrate.serve.app:create_app_from_env",
                factory=True,
                workers=workers,
                lifespan="on",
                **common,  # type: ignore[arg-type]
            )
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _ignore_signal(_sig: int, _frame: FrameType | None) -> None:
    pass


def _log_config(log_level: str) -> dict[str, Any]:
    """Uvicorn's logging, with modelcrate's own records (start-up, shutdown summary) shown
    through the same handler at the same level."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["modelcrate"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    return config


def _stderr() -> Console:
    from rich.console import Console  # Rich is imported only when there is something to show

    return Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``predict`` to the ``modelcrate`` command line."""
    app.command()(serve)
    app.command()(predict)
