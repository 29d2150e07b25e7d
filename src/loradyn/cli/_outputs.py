"""Options and output handling shared by the commands that run one simulation.

``loradyn simulate`` and ``loradyn twolayer simulate`` both take ``--out`` (a netCDF
file), ``--format`` and ``--plot``, check the outputs before they compute anything, and
write the dataset then the plot with one-line errors. Both get them from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import typer

from ..errors import LoradynError
from ..io import write_errors


def check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    """``fmt`` lower-cased if it is one of ``allowed``, else a one-line error."""
    f = fmt.strip().lower()
    if f not in allowed:
        raise LoradynError(f"unknown format {fmt!r}: choose {' or '.join(allowed)}")
    return f


def output_parameters(plot_help: str, formats: tuple[str, ...] = ("table", "json")
                      ) -> list[inspect.Parameter]:
    """The ``--out``, ``--format`` and ``--plot`` options, as extra parameters of
    :func:`loradyn.params.cli_command`."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("out", kw, annotation=str | None,
                          default=typer.Option(None, "--out", "-o",
                                               help="Write the dataset to this netCDF file.")),
        inspect.Parameter("fmt", kw, annotation=str,
                          default=typer.Option(formats[0], "--format", "-f",
                                               help=f"{' or '.join(formats)}.")),
        inspect.Parameter("plot", kw, annotation=str | None,
                          default=typer.Option(None, "--plot", help=plot_help)),
    ]


def write_outputs(ds: Any, out: str | None, plot: str | None,
                  save: Callable[[Any, str], None], draw: Callable[[Any, str], None]) -> None:
    """Write ``ds`` to ``out`` with ``save`` and its plot to ``plot`` with ``draw`` (each
    when asked for); a failed write is one line saying what was kept."""
    if out is not None:
        with write_errors(out, "--out", "the dataset was not saved"):
            save(ds, out)
    if plot is not None:
        kept = f"the dataset is in {out}" if out is not None else "the dataset was not saved"
        with write_errors(plot, "--plot", kept):
            draw(ds, plot)
