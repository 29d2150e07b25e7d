"""CLI command ``loradyn simulate``: one :func:`loradyn.engines.simulate` run.

Parses the options into a :class:`~loradyn.config.RunConfig`, calls
:func:`loradyn.engines.simulate`, and prints a table or the JSON summary
``{"runs": [{"mu", "escape_steps", "final_abs_m"}, ...]}``; optionally writes the
dataset (netCDF, atomically) and a plot. No physics is computed here.
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings

import typer

from ..config import RunConfig
from ..io import check_outputs, memory_errors
from ..params import cli_command
from ._app import app
from ._outputs import check_format, output_parameters, write_outputs

FORMATS = ("table", "json")


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _simulate_body(
    fields: dict,
    misaligned: bool = False,
    out: str | None = None,
    fmt: str = "table",
    plot: str | None = None,
) -> None:
    """Simulate one-pass SGD of the rank-one LoRA model (reduced, dense or ODE engine).

    The options are the fields of RunConfig (loradyn.config): what is simulated, then
    how (engine, backend, device, teacher direction, sampler).
    """
    from ..engines import DivergenceWarning, runs_json, simulate
    from ..engines.results import plot_run, save_netcdf, summary_rows

    f = check_format(fmt, FORMATS)
    check_outputs({"--out": out}, plots={"--plot": plot})  # before the run, not after it
    if misaligned:
        fields["pretraining"] = "misaligned"
    cfg = RunConfig(**fields)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DivergenceWarning)
        with memory_errors("reduce --d, --batch, --seeds or the number of mu values"):
            ds = _run_with_progress(cfg, simulate)
    for w in caught:
        if issubclass(w.category, DivergenceWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    write_outputs(ds, out, plot, save_netcdf, plot_run)
    if f == "json":
        sys.stdout.write(json.dumps(runs_json(ds)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    rows = summary_rows(ds)
    cols = [
        ("mu", "mu"),
        ("escaped", "escaped"),
        ("escape_median", "escape"),
        ("exit_step_theory", "theory"),
        ("tau_theory", "tau"),
        ("final_abs_m", "|m| end"),
        ("final_mse", "MSE end"),
        ("diverged", "div."),
    ]
    table = Table(
        title=f"engine={cfg.engine} teacher={cfg.teacher} student={cfg.student} "
        f"d={cfg.d} lr={cfg.lr:g} batch={cfg.batch} steps={cfg.steps}"
    )
    for _, name in cols:
        table.add_column(name, justify="right")
    for r in rows:
        cells = [_fmt(r[k]) for k, _ in cols]
        cells[1] = f"{r['escaped']}/{r['seeds']}"
        table.add_row(*cells)
    Console().print(table)
    Console().print("escape: median step (escaped seeds); theory: tau log(R sqrt d) / lr")
    if cfg.pretraining == "misaligned":
        Console().print(f"theory: {ds.attrs['tau_note']}")
    tail = f"; wrote {out}" if out else ""
    Console().print(f"wall time {ds.attrs['wall_time_s']:.2f} s{tail}")


def _run_with_progress(cfg: RunConfig, simulate):
    """Run with a rich progress bar on stderr when stderr is a terminal."""
    if not sys.stderr.isatty():
        return simulate(cfg)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("simulate"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("simulate", total=1.0)

        def cb(frac: float, message: str = "") -> None:
            bar.update(task, completed=frac)

        return simulate(cfg, progress=cb)


_EXTRA = [
    inspect.Parameter("misaligned", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--misaligned",
                                           help="Same as --pretraining misaligned.")),
    *output_parameters("Write a PNG of |m|(t) and the test MSE.", FORMATS),
]

simulate_cmd = app.command("simulate")(
    cli_command(RunConfig, _simulate_body, extra=_EXTRA, overrides={"teacher": {"default": ...}})
)
