"""``modelcrate dockerfile``: a production Dockerfile and build context. Thin: parse, call, render.

Errors are :class:`~modelcrate.errors.ModelcrateError` and mapped to exit codes by
``modelcrate.cli.main``. Progress goes to stderr; the summary goes to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelcrate.cli.serve_cmd import RefArgument, StoreOption

if TYPE_CHECKING:
    from modelcrate.image.dockerfile import DockerContext


def register(app: typer.Typer) -> None:
    """Add ``dockerfile`` to ``app``."""
    app.command("dockerfile")(dockerfile_cmd)


def dockerfile_cmd(
    crate: RefArgument,
    directory: Annotated[
        Path, typer.Argument(help="Folder for the Dockerfile and build context (new or empty).")
    ],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image (default: python:X.Y-slim for the crate's Python; with --gpu an "
            "nvidia/cuda cudnn-runtime image).",
            show_default=False,
        ),
    ] = None,
    gpu: Annotated[
        bool,
        typer.Option(
            "--gpu", help="NVIDIA CUDA runtime base; onnxruntime-gpu replaces onnxruntime."
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Write a production Dockerfile and its build context for a crate into DIRECTORY.

    Multi-stage (hash-checked wheels in a builder), slim base, dependencies before code,
    non-root user, exec-form entrypoint, HEALTHCHECK. Exit 0: written; 2: bad input.
    """
    from rich.console import Console

    from modelcrate.cli.serve_cmd import resolve_crate
    from modelcrate.crate.store import Store
    from modelcrate.image.dockerfile import write_dockerfile

    err = Console(stderr=True, highlight=False)
    crate_dir = resolve_crate(crate, store)
    the_store = Store.default(store)
    ctx = write_dockerfile(
        crate_dir,
        directory,
        base=base,
        gpu=gpu,
        lock_cache=the_store.locks_dir if the_store.root.is_dir() else None,
        progress=lambda step: err.print(f"[dim]· {step}[/dim]"),
    )
    _render(ctx)


def _render(ctx: DockerContext) -> None:
    from rich.console import Console

    out = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=240)
    where = str(ctx.path)
    out.print(f"Wrote [bold]{where}[/bold] ({len(ctx.files)} files) for {ctx.name} {ctx.version}")
    out.print(f"  base    {ctx.base}{'  (GPU)' if ctx.gpu else ''}")
    out.print(f"  lock    sha256:{ctx.lock_sha256}")
    for change in ctx.changes:
        out.print(f"  GPU     {change}", markup=False)
    out.print(f"Build:  docker build -t {ctx.tag} {where}", markup=False)
    gpus = "--gpus all " if ctx.gpu else ""
    out.print(f"Run:    docker run --rm {gpus}-p 8080:8080 {ctx.tag}", markup=False)
