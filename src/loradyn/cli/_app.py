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
