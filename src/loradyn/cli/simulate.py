"""CLI command ``loradyn simulate``: one :func:`loradyn.engines.simulate` run.

Parses the options into a :class:`~loradyn.config.RunConfig`, calls
:func:`loradyn.engines.simulate`, and prints a table or the JSON summary
``{"runs": [{"mu", "escape_steps", "final_abs_m"}, ...]}``; optionally writes the
dataset (netCDF, atomically) and a plot. No physics is computed here.
"""

from __future__ import annotations

import json
import sys
import warnings

import typer

from ..config import RunConfig
from ..errors import LoradynError
from ..io import check_outputs, memory_errors, write_errors
from ._app import app

FORMATS = ("table", "json")


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


@app.command("simulate")
def simulate_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher activation, e.g. erf, he3."),
    student: str = typer.Option(None, "--student", "-s", help="Student (default: teacher)."),
    label: str = typer.Option("identity", "--label", help="Label transform: identity or square."),
    loss: str = typer.Option("mse", "--loss", help="Loss: mse or correlation."),
    misaligned: bool = typer.Option(False, "--misaligned", help="Misaligned pre-training."),
    engine: str = typer.Option("reduced", "--engine", "-e", help="reduced, dense or ode."),
    mu: str = typer.Option("0.5", "--mu", help="Comma list or START:STOP:NUM."),
    d: int = typer.Option(1000, "--d", help="Dimension."),
    lr: float = typer.Option(0.2, "--lr", help="Learning rate."),
    batch: int = typer.Option(500, "--batch", help="Fresh samples per step."),
    steps: int = typer.Option(10000, "--steps", help="SGD steps."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds."),
    seed0: int = typer.Option(0, "--seed0", help="First seed."),
    threshold: float = typer.Option(0.5, "--threshold", help="Escape threshold on |m|."),
    update: str = typer.Option("spherical", "--update", help="spherical or renormalized."),
    record_every: int = typer.Option(None, "--record-every", help="Record every k steps."),
    u0: float = typer.Option(None, "--u0", help="Initial u (default 1/sqrt(d))."),
    m0: float = typer.Option(None, "--m0", help="Fixed initial m (default: uniform w0)."),
    backend: str = typer.Option("numpy", "--backend", help="Dense engine: numpy or torch."),
    switch_label: str = typer.Option(None, "--switch-label", help="Two-stage: label after."),
    switch_step: int = typer.Option(None, "--switch-step", help="Two-stage: switch at step."),
    switch_m: float = typer.Option(None, "--switch-m", help="Two-stage: switch when |m| >= x."),
    out: str = typer.Option(None, "--out", "-o", help="Write the dataset to this netCDF file."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    plot: str = typer.Option(None, "--plot", help="Write a PNG of |m|(t) and the test MSE."),
) -> None:
    """Simulate one-pass SGD of the rank-one LoRA model (reduced, dense or ODE engine)."""
    from ..engines import DivergenceWarning, runs_json, simulate
    from ..engines.results import plot_run, save_netcdf, summary_rows
    from ..linearization import parse_mu_spec

    f = fmt.strip().lower()
    if f not in FORMATS:
        raise LoradynError(f"unknown format {fmt!r}: choose table or json")
    mus = parse_mu_spec(mu)
    check_outputs({"--out": out}, plots={"--plot": plot})  # before the run, not after it
    cfg = RunConfig(
        teacher=teacher,
        student=student,
        label=label,
        loss=loss,
        mu=mus,
        d=d,
        lr=lr,
        batch=batch,
        steps=steps,
        seeds=seeds,
        seed0=seed0,
        u0=u0,
        m0=m0,
        update=update,
        pretraining="misaligned" if misaligned else "aligned",
        record_every=record_every,
        threshold=threshold,
        engine=engine,
        backend=backend,
        switch_label=switch_label,
        switch_step=switch_step,
        switch_m=switch_m,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DivergenceWarning)
        with memory_errors("reduce --d, --batch, --seeds or the number of mu values"):
            ds = _run_with_progress(cfg, simulate)
    for w in caught:
        if issubclass(w.category, DivergenceWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    if out is not None:
        with write_errors(out, "--out", "the dataset was not saved"):
            save_netcdf(ds, out)
    if plot is not None:
        kept = f"the dataset is in {out}" if out is not None else "the dataset was not saved"
        with write_errors(plot, "--plot", kept):
            plot_run(ds, plot)
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
