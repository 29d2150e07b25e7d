"""Command-line interface: a thin layer over the library.

Each command lives in a module of this package, parses its arguments, calls one library
function and prints the result. User errors (:class:`loradyn.errors.LoradynError`) and
usage errors (a missing or unknown option, a value of the wrong type, an unknown command)
are printed as one line ``error: ...`` on stderr with exit code 2, never as a traceback.
``loradyn`` or a command group without arguments prints its help (exit 0).

Typer's usage errors derive from the public :class:`typer.TyperException` (typer >= 0.29
bundles its own click and no longer raises ``click`` exceptions); ``typer.Exit`` and
``typer.Abort`` are public as well, so no private exception class is named here.
"""

from __future__ import annotations

import sys

import typer

from ..errors import LoradynError

# Command modules register themselves on ``app`` when imported.
from . import escape, reproduce, simulate, sweep, theory, twolayer, vit  # noqa: F401
from ._app import app

__all__ = ["app", "main"]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _bare_group(cmd: object, args: list[str]) -> bool:
    """Whether ``args`` names only command groups (``loradyn``, ``loradyn sweep``)."""
    node = cmd
    for tok in args:
        commands = getattr(node, "commands", None)
        if not isinstance(commands, dict) or tok not in commands:
            return False
        node = commands[tok]
    return isinstance(getattr(node, "commands", None), dict)


def _usage_line(exc: Exception) -> str:
    """``error: <message> (see 'loradyn CMD --help')`` on one line."""
    fmt = getattr(exc, "format_message", None)
    msg = _one_line(fmt() if callable(fmt) else exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "loradyn"
    return f"error: {msg} (see '{path} --help')"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loradyn`` console script; always ends with :func:`sys.exit`."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = typer.main.get_command(app)
    if _bare_group(cmd, args):
        args.append("--help")  # a bare group prints its help and succeeds
    try:
        rv = cmd.main(args=args, prog_name="loradyn", standalone_mode=False)
    except LoradynError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:  # raised outside the command's own invocation
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: missing/unknown option, bad type
        print(_usage_line(exc), file=sys.stderr)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
