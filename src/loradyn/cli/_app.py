"""The Typer application shared by every command module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="loradyn",
    help="Dynamics of LoRA fine-tuning: theory, simulation and reproduction of the paper.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"loradyn {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Dynamics of LoRA fine-tuning: theory, simulation and reproduction of the paper."""
