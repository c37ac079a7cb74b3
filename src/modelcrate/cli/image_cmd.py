"""``modelcrate containerize``: a crate to an OCI image (layout, archive or registry push).

Thin: parse, call :func:`modelcrate.image.containerize.containerize`, render. Progress goes to
stderr, the result to stdout; errors map to exit codes in ``modelcrate.cli.main``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from modelcrate.cli.render import stdout_console, step_progress
from modelcrate.cli.serve_cmd import RefArgument, StoreOption

if TYPE_CHECKING:
    from rich.console import Console

    from modelcrate.image.containerize import ImageResult

STEP_LABELS = {
    "crate": "Read and verify the crate",
    "base": "Base image and its Python",
    "wheels": "Wheels layer",
    "libraries": "Shared libraries the wheels need",
    "model": "Model layer",
    "app": "Crate and runtime layer",
    "config": "Image config",
    "write": "Write the image",
    "push": "Push to the registry",
}


class ImageFormat(StrEnum):
    oci = "oci"
    docker = "docker"


def register(app: typer.Typer) -> None:
    """Add ``containerize`` to ``app``."""
    app.command("containerize")(containerize_cmd)


def containerize_cmd(
    crate: RefArgument,
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image: [REGISTRY/]REPO[:TAG|@DIGEST], oci:DIR[:TAG] or "
            "oci-archive:FILE[:TAG] (default: python:3.11-slim).",
            show_default=False,
        ),
    ] = None,
    platform: Annotated[str, typer.Option(help="Image platform OS/ARCH.")] = "linux/amd64",
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the image: oci:DIR[:TAG] (OCI layout) or oci-archive:FILE[:TAG] "
            "(loads with podman load and docker load).",
            show_default=False,
        ),
    ] = None,
    push: Annotated[
        str | None,
        typer.Option(help="Push to HOST[:PORT]/REPO[:TAG].", show_default=False),
    ] = None,
    image_format: Annotated[
        ImageFormat,
        typer.Option(
            "--format",
            help="Manifest media types: oci, or docker (same blobs; podman then honours the "
            "health check).",
        ),
    ] = ImageFormat.oci,
    insecure_registry: Annotated[
        bool, typer.Option(help="Talk plain HTTP to the registries (base and push).")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Build a reproducible OCI image of a crate, without Docker: base, wheels, model, code.

    Refused when the base lacks a shared library the wheels' native code needs (named, with
    the wheel and the package to add). Registry credentials: MODELCRATE_REGISTRY_USER and
    _PASSWORD (or _TOKEN) go only to the hosts in MODELCRATE_REGISTRY_HOST, or else to the
    registry named by --push (else --base); every other host uses the podman/docker auth files.

    Exit 0: built (and written or pushed); 2: bad input (crate, base, registry, platform,
    missing libraries).
    """
    from rich.console import Console

    from modelcrate.image.containerize import containerize

    err = Console(stderr=True, highlight=False)
    with step_progress(err, STEP_LABELS) as progress:
        result = containerize(
            crate,
            base=base,
            platform=platform,
            output=output,
            push=push,
            insecure_registry=insecure_registry,
            image_format=image_format.value,
            store=store,
            progress=progress,
        )
    _render(result, stdout_console())
    if not result.written and result.pushed is None:
        err.print("nothing written: pass --output oci:DIR or --push HOST/REPO:TAG", style="yellow")


def _render(result: ImageResult, out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    out.print(Text.assemble(("image: ", "bold"), (result.digest, "bold green")))
    info = Table(show_header=False, box=None, padding=(0, 2))
    info.add_column(style="dim", no_wrap=True)
    info.add_column(overflow="fold")
    info.add_row("crate", f"{result.crate} ({result.crate_version})")
    info.add_row("base", f"{result.base} ({result.base_digest})")
    info.add_row("python", f"{result.python_version} at {result.python}")
    info.add_row("platform", result.platform)
    info.add_row(
        "size", f"{_size(result.base_size)} base + {_size(result.added_size)} added (compressed)"
    )
    libs = result.libraries
    if libs is not None:
        info.add_row(
            "libraries",
            f"{libs.checked} shared objects checked: {len(libs.from_base)} libraries from the "
            f"base ({', '.join(libs.from_base) or 'none'}), {len(libs.bundled)} bundled"
            + (
                f", {', '.join(libs.from_runtime)} from the GPU runtime"
                if libs.from_runtime
                else ""
            ),
        )
        skipped = [*libs.foreign, *libs.unreadable]
        if skipped:
            shown = "; ".join(f"{path} ({why})" for path, why in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            info.add_row("not checked", f"{shown}{more}")
    for where in result.written:
        info.add_row("written", where)
    if result.pushed is not None:
        p = result.pushed
        info.add_row("pushed", f"{p.reference} ({p.pinned})")
        info.add_row(
            "sent",
            f"{_size(p.bytes_sent)} in {p.blobs_sent} blobs; {p.blobs_skipped} already there, "
            f"{p.blobs_mounted} mounted from the base's repository",
        )
    out.print(info)
    layers = Table(box=None, padding=(0, 2), header_style="dim")
    layers.add_column("layer")
    layers.add_column("digest", overflow="fold")
    layers.add_column("size", justify="right")
    for layer in result.layers:
        note = " (cached)" if layer.role == "wheels" and result.wheels_cached else ""
        layers.add_row(layer.role + note, layer.digest, _size(layer.size))
    out.print(layers)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
