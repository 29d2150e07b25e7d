"""CLI of the two-layer LoRA model (App. K): ``loradyn twolayer tau``, ``... simulate`` and
``... escape``.

Each command parses its options, calls one library function of :mod:`loradyn.twolayer`
and prints the result; nothing is computed here. The options of ``simulate`` are
generated from the field declarations of :class:`~loradyn.twolayer.TwoLayerConfig`
(:func:`loradyn.params.cli_command`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable

import typer

from ..errors import LoradynError
from ..escape import QUANTILE_NAMES
from ..io import check_outputs, memory_errors
from ..params import cli_command, declared, parse_ints
from ..twolayer import TwoLayerConfig, plot_loss, save, simulate, summary, tau
from ..twolayer.escape import escape_distribution
from ._app import app
from ._outputs import check_format, emit_rows, output_parameters, write_outputs

twolayer_app = typer.Typer(
    name="twolayer",
    help="Two-layer LoRA model of App. K: K teacher neurons, alignments mu_k, rank r.",
    no_args_is_help=True,
)
app.add_typer(twolayer_app, name="twolayer")


def _tau_body(fields: dict, fmt: str = "table") -> None:
    """Search-phase escape rate lambda_plus and tau = 1/lambda_plus per rank."""
    f = check_format(fmt, ("table", "csv", "json"))
    res = tau(fields["activation"], fields["mu"], parse_ints(fields["rank"], "rank"),
              norm=fields["norm"], teacher=fields["teacher"], label=fields["label"])
    meta = {"activation": res.activation, "teacher": res.teacher, "label": res.label,
            "mu": list(res.mu), "norm": res.norm}
    emit_rows(res.rows(), ["rank", "lambda_plus", "tau"], f,
              f"two-layer search phase: {res.activation}, mu = {list(res.mu)}", meta)


_RANK_LIST = {"type": str, "default": "1", "names": ("--rank", "-r")}
_TAU_KEEP = ("activation", "mu", "rank", "norm", "teacher", "label")

def _theory_command(name: str, body: Callable[..., None], keep: tuple[str, ...],
                    mu_help: str, activation: dict) -> Callable[..., None]:
    """A theory command (no simulation): the ``keep`` fields of TwoLayerConfig, ``--mu`` and
    ``--rank`` as comma lists, and ``--format table|csv|json``."""
    return twolayer_app.command(name)(
        cli_command(TwoLayerConfig, body,
                    extra=[inspect.Parameter("fmt", inspect.Parameter.KEYWORD_ONLY,
                                             annotation=str,
                                             default=typer.Option("table", "--format", "-f",
                                                                  help="table, csv or json."))],
                    skip=tuple(f.name for f, _ in declared(TwoLayerConfig)
                               if f.name not in keep),
                    overrides={"mu": {"default": ..., "help": mu_help},
                               "rank": {**_RANK_LIST,
                                        "help": "Comma list of ranks, e.g. 1,2,4."},
                               "activation": activation}))


tau_cmd = _theory_command(
    "tau", _tau_body, _TAU_KEEP, "Comma list of mu_k, one per teacher neuron.",
    {"help": "Any registered activation (erf, relu, he3, he2+he3...)."})


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
    emit_rows(rows, list(rows[0]) if rows else [], f,
              f"two-layer {cfg.engine}: {cfg.activation}, mu = {list(cfg.mu)}",
              {"engine": cfg.engine, "config": json.loads(ds.attrs["config"])})


simulate_cmd = twolayer_app.command("simulate")(
    cli_command(TwoLayerConfig, _simulate_body,
                extra=output_parameters("Write a PNG of loss vs time to this file."),
                overrides={"rank": {**_RANK_LIST, "help": "LoRA rank, or a comma list of ranks "
                                    "(as --ranks)."}})
)


def _escape_body(fields: dict, fmt: str = "table") -> None:
    """Predicted escape-step quantiles (5-95%) and mean per rank (linear activation, any mu_k).

    No simulation: the exact reduction of the linear two-layer model to the single-index
    one through the collective mismatch vector, r directions of which the first to reach
    the threshold escapes (docs/theory.md section 12.1). --m0 unset means uniform directions.
    """
    f = check_format(fmt, ("table", "csv", "json"))
    m0 = fields["m0"]
    if m0 is not None and not isinstance(m0, int | float):
        raise LoradynError("the escape prediction takes a number --m0 (overlap m0 on neuron "
                           "j mod K), not an r x K list")
    res = escape_distribution(list(fields["mu"]), parse_ints(fields["rank"], "rank"),
                              d=fields["d"], lr=fields["lr"], batch=fields["batch"],
                              radius=fields["threshold"], a0=fields["a0"], m0=m0,
                              norm=fields["norm"], activation=fields["activation"])
    rows = [{"rank": r, **{n: float(v) for n, v in zip(QUANTILE_NAMES, q, strict=True)},
             "mean": float(m)} for r, q, m in zip(res.ranks, res.quantiles, res.mean,
                                                   strict=True)]
    meta = {k: res.config[k] for k in ("mu", "K", "d", "lr", "batch", "radius", "a0", "m0",
                                       "norm", "single_index_mu")}
    meta["units"] = "SGD steps"
    emit_rows(rows, ["rank", *QUANTILE_NAMES, "mean"], f,
              f"two-layer escape step: linear, mu = {res.config['mu']}, d = {fields['d']}, "
              f"lr = {fields['lr']:g}, batch = {fields['batch']}", meta)


_ESCAPE_KEEP = ("activation", "mu", "rank", "norm", "d", "lr", "batch", "a0", "m0",
                "threshold")

escape_cmd = _theory_command(
    "escape", _escape_body, _ESCAPE_KEEP,
    "Comma list of mu_k, one per teacher neuron (unequal allowed).",
    {"default": "linear", "help": "The prediction covers linear only."})
