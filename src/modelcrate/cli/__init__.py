"""The command line: parses options, calls the library, renders results, maps exit codes.

``scan`` and ``serve`` are plain click commands (``scan_cmd``, ``serve_click``), the others a Typer
app (``typer_app``): a per-file ``modelcrate scan`` in a CI loop and a server's cold start never
import Typer.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from modelcrate.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, ModelcrateError

if TYPE_CHECKING:
    from rich.console import Console


def __getattr__(name: str) -> Any:
    """``modelcrate.cli.app`` (the Typer app) loads, with the command modules, on first use."""
    if name == "app":
        from modelcrate.cli.typer_app import app

        return app
    raise AttributeError(f"module 'modelcrate.cli' has no attribute {name!r}")


def err() -> Console:
    """The diagnostics console, created on first use (Rich costs start-up time)."""
    from rich.console import Console

    return Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; maps errors to exit codes in one place."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["scan"]:
            from modelcrate.cli.scan_cmd import scan

            rc = scan.main(args[1:], prog_name="modelcrate scan", standalone_mode=False)
        elif args[:1] == ["serve"]:
            from modelcrate.cli.serve_click import serve

            rc = serve.main(args[1:], prog_name="modelcrate serve", standalone_mode=False)
        else:
            from modelcrate.cli.typer_app import cli_group

            rc = cli_group().main(args, prog_name="modelcrate", standalone_mode=False)
    except ModelcrateError as exc:
        err().print(exc.render(), markup=False, highlight=False)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.Abort:
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
