"""CLI command ``loradyn escape``: the predicted law of the escape step (no simulation)."""

from __future__ import annotations

import math
import sys

import typer

from ..errors import LoradynError
from ..escape import QUANTILE_NAMES, escape_distribution
from ..linearization import parse_mu_spec
from ._app import app
from .theory import _check_format, _emit


def _parse_m0(text: str) -> float | None:
    s = text.strip().lower()
    if s in ("random", "uniform", ""):
        return None
    try:
        v = float(s)
    except ValueError:
        raise LoradynError(f"cannot parse --m0 {text!r}: give a number in (-1, 1) or 'random'") \
            from None
    if not math.isfinite(v):
        raise LoradynError(f"--m0 {text!r} is not finite: give a number in (-1, 1) or 'random'")
    return v


@app.command("escape")
def escape_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher activation, e.g. erf, he3."),
    student: str = typer.Option(None, "--student", "-s", help="Student (default: teacher)."),
    label: str = typer.Option("identity", "--label", help="Label transform: identity or square."),
    loss: str = typer.Option("mse", "--loss", help="Loss: mse or correlation."),
    mu: str = typer.Option(..., "--mu", help="START:STOP:NUM (inclusive) or a comma list."),
    d: int = typer.Option(1000, "--d", help="Input dimension."),
    lr: float = typer.Option(0.2, "--lr", help="SGD learning rate."),
    batch: int = typer.Option(500, "--batch", help="Batch size (fresh samples per step)."),
    radius: float = typer.Option(0.5, "--radius", help="Escape radius R on |m|."),
    u0: float = typer.Option(None, "--u0", help="Initial LoRA scale (default 1/sqrt(d))."),
    m0: str = typer.Option("random", "--m0",
                           help="Initial overlap: a number, or 'random' (w0 uniform)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Predicted escape-step quantiles (5-95%) and mean of one-pass SGD, per mu."""
    f = _check_format(fmt)
    mus = parse_mu_spec(mu)
    res = escape_distribution(teacher, mus, student=student, label=label, loss=loss, d=d,
                              lr=lr, batch=batch, radius=radius, u0=u0, m0=_parse_m0(m0))
    cols = ["mu", *QUANTILE_NAMES, "mean", "tau", "leading", "noise_fraction", "in_regime"]
    rows = res.rows()
    if f != "json":
        for r in rows:
            r["in_regime"] = "yes" if r["in_regime"] else "no"
    meta = {k: res.config[k] for k in ("problem", "d", "lr", "batch", "radius", "u0", "m0",
                                       "step_noise")}
    meta["units"] = "SGD steps"
    _emit(rows, cols, f, f"escape step: {res.config['problem']}, d = {d}, lr = {lr:g}, "
          f"batch = {batch}", meta)
    if f == "table" and not all(res.in_regime):
        print("note: rows with in_regime = no lie outside the validated regime "
              "(lr d / batch <= 1 and a mean flow that reaches the radius)", file=sys.stderr)
