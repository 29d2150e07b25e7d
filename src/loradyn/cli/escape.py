"""CLI command ``loradyn escape``: the predicted law of the escape step (no simulation).

The options shared with ``simulate`` (``--teacher --student --label --loss --mu --d --lr
--batch --u0 --m0``) are generated from the declarations of
:class:`loradyn.config.RunConfig` (:func:`loradyn.params.cli_command`); ``--radius`` and
``--format`` are this command's own.
"""

from __future__ import annotations

import inspect
import sys

import typer

from ..config import RunConfig
from ..escape import MAX_MULT_NOISE, QUANTILE_NAMES, escape_distribution
from ..params import cli_command, declared
from ._app import app
from ._outputs import check_format, emit_rows

_KEEP = ("teacher", "student", "label", "loss", "mu", "d", "lr", "batch", "u0", "m0")
_SKIP = tuple(f.name for f, _ in declared(RunConfig) if f.name not in _KEEP)


def _escape_body(fields: dict, radius: float, fmt: str) -> None:
    """Predicted escape-step quantiles (5-95%) and mean of one-pass SGD, per mu.

    No simulation: the random start projected on the unstable mode, the SGD noise as a
    discrete Ornstein-Uhlenbeck sum, and the nonlinear exit along the population flow
    (docs/theory.md section 12). --m0 unset means w0 uniform on the sphere.
    """
    f = check_format(fmt)
    res = escape_distribution(
        fields["teacher"], fields["mu"], student=fields["student"], label=fields["label"],
        loss=fields["loss"], d=fields["d"], lr=fields["lr"], batch=fields["batch"],
        radius=radius, u0=fields["u0"], m0=fields["m0"])
    cols = ["mu", *QUANTILE_NAMES, "mean", "tau", "leading", "noise_fraction", "in_regime"]
    rows = res.rows()
    if f != "json":
        for r in rows:
            r["in_regime"] = "yes" if r["in_regime"] else "no"
    meta = {k: res.config[k] for k in ("problem", "d", "lr", "batch", "radius", "u0", "m0",
                                       "step_noise")}
    meta["units"] = "SGD steps"
    title = (f"escape step: {res.config['problem']}, d = {res.config['d']}, "
             f"lr = {res.config['lr']:g}, batch = {res.config['batch']}")
    emit_rows(rows, cols, f, title, meta)
    if f == "table" and not all(res.in_regime):
        print("note: rows with in_regime = no lie outside the validated regime "
              "(lr d / batch <= 1 in the paper's units, a mean flow that reaches the radius and "
              f"a moderate multiplicative noise, mult_noise <= {MAX_MULT_NOISE:g})",
              file=sys.stderr)


_EXTRA = [
    inspect.Parameter("radius", inspect.Parameter.KEYWORD_ONLY, annotation=float,
                      default=typer.Option(0.5, "--radius", help="Escape radius R on |m|.")),
    inspect.Parameter("fmt", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("table", "--format", "-f",
                                           help="table, csv or json.")),
]

escape_cmd = app.command("escape")(
    cli_command(RunConfig, _escape_body, extra=_EXTRA, skip=_SKIP,
                overrides={"teacher": {"default": ...}, "mu": {"default": ...}})
)
