"""CLI of the two-layer LoRA model (App. K): ``loradyn twolayer tau`` and ``... simulate``.

Each command parses its options, calls one library function of :mod:`loradyn.twolayer`
and prints the result; nothing is computed here. The options of ``simulate`` are
generated from the field declarations of :class:`~loradyn.twolayer.TwoLayerConfig`
(:func:`loradyn.params.cli_command`).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import sys

import typer

from ..errors import LoradynError
from ..io import check_outputs, memory_errors
from ..params import cli_command, declared, parse_ints
from ..twolayer import TwoLayerConfig, plot_loss, save, simulate, summary, tau
from ._app import app
from ._outputs import check_format, output_parameters, write_outputs

twolayer_app = typer.Typer(
    name="twolayer",
    help="Two-layer LoRA model of App. K: K teacher neurons, alignments mu_k, rank r.",
    no_args_is_help=True,
)
app.add_typer(twolayer_app, name="twolayer")


def _json_num(v):
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def _table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    cols = list(rows[0]) if rows else []
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    Console().print(t)


def _tau_body(fields: dict, fmt: str = "table") -> None:
    """Search-phase escape rate lambda_plus and tau = 1/lambda_plus per rank."""
    f = check_format(fmt, ("table", "csv", "json"))
    res = tau(fields["activation"], fields["mu"], parse_ints(fields["rank"], "rank"),
              norm=fields["norm"], teacher=fields["teacher"], label=fields["label"])
    rows = res.rows()
    if f == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "lambda_plus", "tau"])
        for r in rows:
            w.writerow([r["rank"], repr(r["lambda_plus"]), repr(r["tau"])])
        sys.stdout.write(buf.getvalue())
    elif f == "json":
        out = {"activation": res.activation, "teacher": res.teacher, "label": res.label,
               "mu": list(res.mu), "norm": res.norm,
               "rows": [{k: _json_num(v) for k, v in r.items()} for r in rows]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        _table(rows, f"two-layer search phase: {res.activation}, mu = {list(res.mu)}")


_RANK_LIST = {"type": str, "default": "1", "names": ("--rank", "-r")}
_TAU_KEEP = ("activation", "mu", "rank", "norm", "teacher", "label")

tau_cmd = twolayer_app.command("tau")(
    cli_command(TwoLayerConfig, _tau_body,
                extra=[inspect.Parameter("fmt", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                         default=typer.Option("table", "--format", "-f",
                                                              help="table, csv or json."))],
                skip=tuple(f.name for f, _ in declared(TwoLayerConfig)
                           if f.name not in _TAU_KEEP),
                overrides={"mu": {"default": ..., "help": "Comma list of mu_k, one per "
                                  "teacher neuron."},
                           "rank": {**_RANK_LIST, "help": "Comma list of ranks, e.g. 1,2,4."},
                           "activation": {"help": "Any registered activation (erf, relu, "
                                          "he3, he2+he3...)."}})
)


def _simulate_body(fields: dict, out: str | None = None, fmt: str = "table",
                   plot: str | None = None) -> None:
    """Simulate the two-layer model (one row per rank: escape statistics and final loss).

    The options are the fields of TwoLayerConfig (loradyn.twolayer.model): what is
    simulated, then how (engine, ODE noise term, stop on escape). --rank also takes a comma
    list (as --ranks).
    """
    f = check_format(fmt, ("table", "json"))
    ranks = parse_ints(fields["rank"], "rank")
    fields["rank"] = ranks[0]
    if len(ranks) > 1:
        if fields["ranks"] is not None:
            raise LoradynError("give several ranks with --rank or --ranks, not both")
        fields["ranks"] = ranks
    cfg = TwoLayerConfig(**fields)
    check_outputs({"--out": out}, plots={"--plot": plot}, create_folder=True)
    with memory_errors("reduce --d, --batch, --seeds or the number of ranks"):
        ds = simulate(cfg)
    rows = summary(ds)
    write_outputs(ds, out, plot, save, plot_loss)
    if f == "json":
        res = {"engine": cfg.engine, "config": json.loads(ds.attrs["config"]),
               "rows": [{k: _json_num(v) for k, v in r.items()} for r in rows]}
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
    else:
        _table(rows, f"two-layer {cfg.engine}: {cfg.activation}, mu = {list(cfg.mu)}")


simulate_cmd = twolayer_app.command("simulate")(
    cli_command(TwoLayerConfig, _simulate_body,
                extra=output_parameters("Write a PNG of loss vs time to this file."),
                overrides={"rank": {**_RANK_LIST, "help": "LoRA rank, or a comma list of ranks "
                                    "(as --ranks)."}})
)
