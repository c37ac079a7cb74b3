"""The Typer application: every command but ``scan`` and ``serve`` (click commands, see
``scan_cmd`` and ``serve_click``), plus ``--version``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from modelcrate import __version__
from modelcrate.cli import crate_cmd, dockerfile_cmd, image_cmd, serve_cmd
from modelcrate.errors import EXIT_OK

if TYPE_CHECKING:
    import click

app = typer.Typer(
    name="modelcrate",
    help="From a trained model file to a secure, reproducible, typed and fast service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelcrate {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """modelcrate: scan, convert, build, serve and ship models."""


crate_cmd.register(app)
serve_cmd.register(app)
image_cmd.register(app)
dockerfile_cmd.register(app)


def cli_group() -> click.Group:
    """The click group behind ``modelcrate``: the Typer commands, the click ``scan`` and
    ``serve``."""
    from modelcrate.cli.scan_cmd import scan
    from modelcrate.cli.serve_click import serve

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    group.add_command(scan, "scan")
    group.add_command(serve, "serve")
    return group
