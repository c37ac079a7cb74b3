"""The command line: parses options, calls the library, renders results, maps exit codes."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from modelcrate import __version__
from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, ModelcrateError

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    name="modelcrate",
    help="From a trained model file to a secure, reproducible, typed and fast service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


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


@app.command()
def scan(
    paths: Annotated[
        list[Path], typer.Argument(help="Model files or folders (scanned recursively).")
    ],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Report format.")] = (
        OutputFormat.text
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to FILE (atomically).")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(help="Exit 1 when a finding is at or above: info|low|medium|high|critical."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy file (TOML/JSON): allowlist, fail_on, rule severities."),
    ] = None,
    hash_files: Annotated[bool, typer.Option("--hash", help="Compute each file's sha256.")] = False,
    show_info: Annotated[
        bool, typer.Option(help="Also list INFO findings in text output.")
    ] = False,
) -> None:
    """Scan model files statically: nothing in them is imported or executed.

    Exit 0: no finding at or above --fail-on (default high); 1: findings; 2: bad input.
    """
    from modelcrate.scan import Policy, Severity, load_policy
    from modelcrate.scan import scan as run_scan

    pol = load_policy(policy) if policy else Policy()
    try:
        threshold = Severity.parse(fail_on) if fail_on else pol.fail_on
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fail-on") from exc
    report = run_scan(paths, policy=pol, compute_hash=hash_files)

    if fmt is OutputFormat.text:
        from rich.console import Console  # only people's output pays for Rich

        console = Console(file=sys.stdout) if output is None else Console(record=True, width=120)
        from modelcrate.cli.render import render_text

        render_text(report, console, fail_on=threshold, show_info=show_info)
        if output is not None:
            atomic_write_bytes(output, console.export_text().encode())
    else:
        if fmt is OutputFormat.json:
            doc: dict[str, object] = {
                "tool": "modelcrate",
                "version": __version__,
                **report.to_dict(),
            }
            doc["fail_on"] = threshold.name
        else:
            from modelcrate.scan.sarif import to_sarif

            doc = to_sarif(report, tool_version=__version__)
        payload = json.dumps(doc, indent=2).encode() + b"\n"
        if output is None:
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
        else:
            atomic_write_bytes(output, payload)
    raise typer.Exit(EXIT_FINDINGS if report.failed(threshold) else EXIT_OK)


def _register_commands() -> None:
    """Add the other stages' commands (their modules import nothing heavy at import time)."""
    from modelcrate.cli import crate_cmd, dockerfile_cmd, image_cmd, serve_cmd

    if len(app.registered_commands) > 1:
        return  # already added
    crate_cmd.register(app)
    serve_cmd.register(app)
    image_cmd.register(app)
    dockerfile_cmd.register(app)


def err() -> Console:
    """The diagnostics console, created on first use (Rich costs start-up time)."""
    from rich.console import Console

    return Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; maps errors to exit codes in one place."""
    args = sys.argv[1:] if argv is None else argv
    # Typer introspects every registered command on each start (~50 ms for ten); `scan`, run per
    # file in CI loops, needs only its own.
    if args[:1] != ["scan"]:
        _register_commands()
    try:
        rc = app(args=args, standalone_mode=False)
    except ModelcrateError as exc:
        err().print(exc.render(), markup=False, highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err().print("error[usage]: aborted", markup=False)
        return EXIT_INPUT
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        err().print(f"error[usage]: {exc.format_message()}", markup=False, highlight=False)
        err().print("  hint: run 'modelcrate --help' for usage", markup=False)
        return EXIT_INPUT
    except Exception as exc:
        err().print(f"error[internal]: {type(exc).__name__}: {exc}", markup=False, highlight=False)
        err().print("  hint: this is a bug in modelcrate; please report it with the command line")
        return EXIT_INTERNAL
    return int(rc) if isinstance(rc, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
