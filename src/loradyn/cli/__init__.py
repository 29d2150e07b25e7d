"""Command-line interface: a thin layer over the library.

Each command lives in a module of this package, parses its arguments, calls one library
function and prints the result. User errors (:class:`loradyn.errors.LoradynError`) are
printed as one line ``error: ...`` on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from ..errors import LoradynError

# Command modules register themselves on ``app`` when imported.
from . import escape, reproduce, simulate, sweep, theory, twolayer, vit  # noqa: F401
from ._app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loradyn`` console script."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="loradyn", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except LoradynError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
