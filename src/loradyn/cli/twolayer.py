"""CLI of the two-layer LoRA model (App. K): ``loradyn twolayer tau`` and ``... simulate``.

Each command parses its options, calls one library function of :mod:`loradyn.twolayer`
and prints the result; nothing is computed here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import typer

from ..errors import LoradynError, as_int
from ..io import check_outputs, memory_errors, write_errors
from ..twolayer import TwoLayerConfig, plot_loss, save, simulate, summary, tau
from ._app import app

twolayer_app = typer.Typer(
    name="twolayer",
    help="Two-layer LoRA model of App. K: K teacher neurons, alignments mu_k, rank r.",
    no_args_is_help=True,
)
app.add_typer(twolayer_app, name="twolayer")


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LoradynError(
            f"{what} = {text!r} is not a comma list of numbers, e.g. 0.5,0.8"
        ) from None
    if not vals:
        raise LoradynError(f"{what} is empty: give a comma list, e.g. 0.5,0.8")
    return vals


def _ints(text: str, what: str) -> list[int]:
    vals = _floats(text, what)
    try:
        return [as_int(what, v, lo=1, hi=2**31 - 1) for v in vals]
    except LoradynError:
        raise LoradynError(
            f"{what} = {text!r} is invalid: give integers >= 1 (below 2^31), e.g. 1,2,4"
        ) from None


def _fmt(fmt: str, allowed: tuple[str, ...]) -> str:
    f = fmt.strip().lower()
    if f not in allowed:
        raise LoradynError(f"unknown format {fmt!r}: choose {' or '.join(allowed)}")
    return f


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


@twolayer_app.command("tau")
def tau_cmd(
    activation: str = typer.Option("linear", "--activation", "-a",
                                   help="Any registered activation (erf, relu, he3, he2+he3...)."),
    mu: str = typer.Option(..., "--mu", help="Comma list of mu_k, one per teacher neuron."),
    rank: str = typer.Option("1", "--rank", "-r", help="Comma list of ranks, e.g. 1,2,4."),
    norm: str = typer.Option("none", "--norm",
                             help="Output normalization: none, 1/K, 1/sqrt(K) or auto."),
    teacher: str = typer.Option(None, "--teacher", help="Teacher activation (default: student)."),
    label: str = typer.Option("identity", "--label", help="Labels: identity or square."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Search-phase escape rate lambda_plus and tau = 1/lambda_plus per rank."""
    f = _fmt(fmt, ("table", "csv", "json"))
    res = tau(activation, _floats(mu, "mu"), _ints(rank, "rank"), norm=norm, teacher=teacher,
              label=label)
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


@twolayer_app.command("simulate")
def simulate_cmd(
    engine: str = typer.Option("reduced", "--engine", "-e", help="dense, reduced or ode."),
    activation: str = typer.Option("linear", "--activation", "-a", help="Student activation."),
    teacher: str = typer.Option(None, "--teacher", help="Teacher activation (default: student)."),
    norm: str = typer.Option("none", "--norm",
                             help="Output normalization: none, 1/K, 1/sqrt(K) or auto."),
    label: str = typer.Option("identity", "--label", help="Labels: identity or square."),
    from_scratch: bool = typer.Option(False, "--from-scratch",
                                      help="Baseline: train the K x d first layer from random "
                                      "unit rows (no pre-training, no LoRA; mu sets K)."),
    mu: str = typer.Option("0.5,0.5", "--mu", help="Comma list of mu_k (K = its length)."),
    rank: str = typer.Option("1", "--rank", "-r", help="Comma list of ranks."),
    d: int = typer.Option(1000, "--d", help="Input dimension."),
    lr: float = typer.Option(0.05, "--lr", help="Learning rate (ODE time = step * lr)."),
    batch: int = typer.Option(100, "--batch", help="Fresh samples per step."),
    steps: int = typer.Option(2000, "--steps", help="SGD steps."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds."),
    seed0: int = typer.Option(0, "--seed0", help="First seed."),
    a0: float = typer.Option(None, "--a0", help="Initial entries of A (default 1/sqrt(d))."),
    m0: float = typer.Option(None, "--m0", help="Fixed initial overlap (default: random)."),
    update: str = typer.Option("spherical", "--update", help="spherical or renormalized."),
    threshold: float = typer.Option(0.5, "--threshold", help="Escape when max_j |M_j| >= this."),
    record_every: int = typer.Option(None, "--record-every", help="Record every N steps."),
    noise_term: bool = typer.Option(True, "--noise-term/--no-noise-term",
                                    help="ODE: include the finite-step (lr d / B) term."),
    out: str = typer.Option(None, "--out", "-o", help="Write the dataset to this netCDF file."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    plot: str = typer.Option(None, "--plot", help="Write a PNG of loss vs time to this file."),
) -> None:
    """Simulate the two-layer model (one row per rank: escape statistics and final loss)."""
    f = _fmt(fmt, ("table", "json"))
    ranks = _ints(rank, "rank")
    cfg = TwoLayerConfig(
        mu=_floats(mu, "mu"), rank=ranks[0], activation=activation, teacher=teacher, norm=norm,
        d=d, lr=lr, batch=batch, steps=steps, seeds=seeds, seed0=seed0, a0=a0, m0=m0,
        update=update, threshold=threshold, record_every=record_every, noise_term=noise_term,
        label=label, from_scratch=from_scratch,
    )
    check_outputs({"--out": out}, plots={"--plot": plot}, create_folder=True)
    with memory_errors("reduce --d, --batch, --seeds or the number of ranks"):
        ds = simulate(cfg, ranks, engine)
    rows = summary(ds)
    if out is not None:
        with write_errors(out, "--out", "the dataset was not saved"):
            save(ds, out)
    if plot is not None:
        kept = f"the dataset is in {out}" if out is not None else "the dataset was not saved"
        with write_errors(plot, "--plot", kept):
            plot_loss(ds, plot)
    if f == "json":
        res = {"engine": engine, "config": json.loads(ds.attrs["config"]),
               "rows": [{k: _json_num(v) for k, v in r.items()} for r in rows]}
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
    else:
        _table(rows, f"two-layer {engine}: {cfg.activation}, mu = {list(cfg.mu)}")
