"""Options and output handling shared by the commands that run one simulation.

``loradyn simulate`` and ``loradyn twolayer simulate`` both take ``--out`` (a netCDF
file), ``--format`` and ``--plot``, check the outputs before they compute anything, and
write the dataset then the plot with one-line errors. Both get them from here, and every
command that prints rows (``tau``, ``escape``, ``twolayer``...) prints them with
:func:`emit_rows`.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import typer

from ..errors import LoradynError
from ..io import write_errors


def _choices(allowed: tuple[str, ...]) -> str:
    return " or ".join(allowed) if len(allowed) < 3 else (
        f"{', '.join(allowed[:-1])} or {allowed[-1]}")


def check_format(fmt: str, allowed: tuple[str, ...] = ("table", "csv", "json")) -> str:
    """``fmt`` lower-cased if it is one of ``allowed``, else a one-line error."""
    f = fmt.strip().lower()
    if f not in allowed:
        raise LoradynError(f"unknown format {fmt!r}: choose {_choices(allowed)}")
    return f


def json_value(v: Any) -> Any:
    """Finite floats as numbers; ``inf``/``nan`` as strings (JSON has no infinity)."""
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def emit_rows(rows: list[dict], columns: list[str], fmt: str, title: str,
              meta: dict) -> None:
    """Print ``rows`` (dicts) as a rich table (``title``), CSV (header ``columns``, floats
    by ``repr``) or JSON (``meta`` plus ``"rows"``) on stdout."""
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(columns)
        for r in rows:
            wr.writerow([repr(float(r[c])) if isinstance(r[c], float) else r[c] for c in columns])
        sys.stdout.write(buf.getvalue())
    elif fmt == "json":
        out = dict(meta)
        out["rows"] = [{c: json_value(r[c]) for c in columns} for r in rows]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(*(f"{r[c]:.10g}" if isinstance(r[c], float) else str(r[c])
                            for c in columns))
        Console().print(table)


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
