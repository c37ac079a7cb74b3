"""``modelcrate serve``: a crate as a service. A plain click command, like ``scan``.

Start-up time is part of the product (a scaled-to-zero service starts on the first request), so
the command imports neither Typer nor Rich, and the server imports neither FastAPI nor
Starlette until a request needs the documentation app (see ``serve.fast``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from types import FrameType

    from modelcrate.serve.model import ModelInfo


@click.command(
    "serve",
    help="Serve a crate: typed POST /predict, Open Inference Protocol V2 under /v2, KServe V1, "
    "/docs, /healthz, /readyz and Prometheus /metrics.\n\n"
    "REF is NAME[:VERSION] of a crate in the store, or a crate folder.",
)
@click.argument("ref")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Crate store folder (default: $MODELCRATE_HOME or ~/.modelcrate).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per model call when batching concurrent requests (1: no batching; default: "
    "the crate's manifest).",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0),
    default=None,
    help="Longest a request waits for a batch while the model is busy (default: the "
    "crate's manifest). An idle model never makes a request wait.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="Log level.",
)
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="Log every request."
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=0),
    default=8 * 1024 * 1024,
    show_default=True,
    help="Largest request body, in bytes (413 above; 0: no limit).",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="Requests handled at once per worker, counted once their body is in (503 with "
    "Retry-After above; 0: no limit).",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Time limit of one request from its headers, in seconds: its body must arrive by then "
    "(408) and its answer be ready (504; 0: none).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=0),
    default=65_536,
    show_default=True,
    help="Records, V1 instances or V2 tensor rows in one request (413 above; 0: no limit).",
)
@click.option(
    "--read-timeout-s",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="How long a client may stall: to complete a request's headers, between two parts of "
    "a body, or before it reads an answer (408 or the connection closed; 0: no limit). A body "
    "must also arrive within --timeout-s.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=0),
    default=2048,
    show_default=True,
    help="Open connections per worker; above it the longest stalled or idle one is closed "
    "for the new one (0: only the file limit).",
)
@click.option(
    "--graceful-timeout-s",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="On SIGTERM, stop accepting and wait this long for accepted requests to finish.",
)
def serve(
    ref: str,
    host: str,
    port: int,
    workers: int,
    store: Path | None,
    max_batch_size: int | None,
    max_latency_ms: float | None,
    log_level: str,
    access_log: bool,
    max_body_bytes: int,
    max_concurrency: int,
    timeout_s: float,
    max_rows: int,
    read_timeout_s: float,
    max_connections: int,
    graceful_timeout_s: float,
) -> None:
    # Pydantic looks for plugins in every installed distribution's entry points the first time
    # it compiles a validator (tens of ms); the server uses none. An explicit setting wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import uvicorn

    from modelcrate.cli.refs import resolve_crate
    from modelcrate.serve.app import build_app
    from modelcrate.serve.limits import Limits
    from modelcrate.serve.model import open_predictor, read_model_info

    crate_dir = resolve_crate(ref, store).resolve()
    info = read_model_info(crate_dir)
    info = dataclasses.replace(
        info,
        max_batch_size=max_batch_size or info.max_batch_size,
        max_latency_ms=info.max_latency_ms if max_latency_ms is None else max_latency_ms,
    )
    # Verify and load now, before anything listens: a bad crate fails here with a clear error
    # and exit 2. Workers are forked after the load and share the model's memory; their ONNX
    # Runtime session has no thread pool (pool threads do not survive a fork).
    predictor = open_predictor(info, threads=1 if workers > 1 else None)
    _banner(info, host, port, workers)
    limits = Limits(
        max_body_bytes, max_concurrency, timeout_s, max_rows, read_timeout_s, max_connections
    )
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "log_config": _log_config(log_level),
        "timeout_graceful_shutdown": graceful_timeout_s,
        "ws": "none",  # nothing here speaks WebSocket: do not import a WebSocket stack
    }
    if workers > 1:
        from modelcrate.serve.prefork import serve_prefork

        code = serve_prefork(
            lambda: build_app(info, lambda: predictor, limits),
            workers=workers,
            host=host,
            port=port,
            uvicorn_kwargs={
                "lifespan": "on",
                **{k: v for k, v in common.items() if k not in ("host", "port")},
            },
            graceful_timeout_s=graceful_timeout_s,
        )
        raise click.exceptions.Exit(code)
    # Uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found: a no-op one makes a graceful shutdown exit 0, as service managers expect.
    previous = signal.signal(signal.SIGTERM, _ignore_signal)
    try:
        app = build_app(info, lambda: predictor, limits)
        uvicorn.run(app, lifespan="on", http=app.http_protocol, **common)  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _banner(info: ModelInfo, host: str, port: int, workers: int) -> None:
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    batching = (
        f"up to {info.max_batch_size} rows, {info.max_latency_ms:g} ms"
        if info.max_batch_size > 1
        else "off"
    )
    shared = " (forked after the model loaded: one copy of it)" if workers > 1 else ""
    sys.stderr.write(
        f"{info.name} {info.version} ({info.flavor}, {info.runtime})\n"
        f"  typed API  POST {url}/predict   docs {url}/docs\n"
        f"  V2         POST {url}/v2/models/{info.name}/infer\n"
        f"  health     {url}/healthz  {url}/readyz  metrics {url}/metrics\n"
        f"  batching   {batching}\n"
        f"  workers    {workers}{shared}\n"
    )
    sys.stderr.flush()


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
