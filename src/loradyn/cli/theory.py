"""CLI commands of the theory engine: ``tau``, ``singularities``, ``hermite``.

Each command parses its options, calls one library function and prints the result as a
rich table, CSV or JSON. No physics is computed here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import typer

from ..errors import LoradynError
from ..hermite import hermite_coefficients
from ..io import check_outputs, write_errors
from ..linearization import parse_mu_spec, plot_tau, singularities, tau
from ._app import app

FORMATS = ("table", "csv", "json")


def _check_format(fmt: str) -> str:
    f = fmt.strip().lower()
    if f not in FORMATS:
        raise LoradynError(f"unknown format {fmt!r}: choose table, csv or json")
    return f


def _json_value(v: float) -> float | str:
    """Finite floats as numbers; ``inf``/``nan`` as strings (JSON has no infinity)."""
    return v if math.isfinite(v) else str(v)


def _emit(rows: list[dict], columns: list[str], fmt: str, title: str, meta: dict) -> None:
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(columns)
        for r in rows:
            wr.writerow([repr(float(r[c])) if isinstance(r[c], float) else r[c] for c in columns])
        sys.stdout.write(buf.getvalue())
    elif fmt == "json":
        out = dict(meta)
        out["rows"] = [
            {c: _json_value(r[c]) if isinstance(r[c], float) else r[c] for c in columns}
            for r in rows
        ]
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
        if not rows:
            Console().print("no rows")


@app.command("tau")
def tau_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher activation, e.g. erf, he3."),
    student: str = typer.Option(None, "--student", "-s", help="Student (default: teacher)."),
    label: str = typer.Option("identity", "--label", help="Label transform: identity or square."),
    loss: str = typer.Option("mse", "--loss", help="Loss: mse or correlation."),
    mu: str = typer.Option(..., "--mu", help="START:STOP:NUM (inclusive) or a comma list."),
    units: str = typer.Option("natural", "--units", help="natural or paper (heK times K!K)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    plot: str = typer.Option(None, "--plot", help="Also write a PNG of tau(mu) to this file."),
) -> None:
    """Characteristic time tau(mu) of the correlated search phase (with a, b, lambda_plus)."""
    f = _check_format(fmt)
    mus = parse_mu_spec(mu)
    check_outputs({}, plots={"--plot": plot})  # before any output: only the error is printed
    res = tau(teacher, mus, student=student, label=label, loss=loss, units=units)
    cols = ["mu", "a", "b", "lambda_plus", "tau"]
    meta = {"problem": res.problem, "units": res.units, "scale": res.scale}
    _emit(res.rows(), cols, f, f"tau: {res.problem} ({res.units} units)", meta)
    if plot is not None:
        with write_errors(plot, "--plot", "the table above is the result"):
            path = plot_tau(res, plot)
        print(f"plot written to {path}", file=sys.stderr)


@app.command("singularities")
def singularities_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher activation."),
    student: str = typer.Option(None, "--student", "-s", help="Student (default: teacher)."),
    label: str = typer.Option("identity", "--label", help="Label transform: identity or square."),
    loss: str = typer.Option("mse", "--loss", help="Loss: mse or correlation."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Every mu in (0, 1) where tau diverges (b = 0 with a > 0), to 1e-6 or better."""
    f = _check_format(fmt)
    sings = singularities(teacher, student=student, label=label, loss=loss)
    rows = [{"mu": s.mu, "a": s.a, "b": s.b} for s in sings]
    name = f"{teacher}" + (f"/{student}" if student else "") + (
        f" label={label}" if label not in ("identity", None) else ""
    )
    _emit(rows, ["mu", "a", "b"], f, f"singularities: {name}", {"problem": name})


@app.command("hermite")
def hermite_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help="Activation name."),
    variance: float = typer.Option(1.0, "--variance", "-q", help="Pre-activation variance Q."),
    kmax: int = typer.Option(10, "--kmax", "-k", help="Highest Hermite degree."),
    label: str = typer.Option("identity", "--label", help="Expand T(activation)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Hermite coefficients c_k(Q) of an activation and its information exponent."""
    f = _check_format(fmt)
    h = hermite_coefficients(activation, variance=variance, kmax=kmax, label=label)
    ie = h.information_exponent()
    rows = [
        {"k": k, "coeff": float(c), "normalized": float(n)}
        for k, (c, n) in enumerate(zip(h.coeffs, h.normalized, strict=True))
    ]
    meta = {
        "activation": h.name, "variance": h.variance, "information_exponent": ie,
        "quadrature_error": h.error, "nodes": h.nodes,
    }
    title = f"Hermite coefficients of {h.name} (Q = {h.variance:g})"
    _emit(rows, ["k", "coeff", "normalized"], f, title, meta)
    if f == "table":
        print(f"information exponent: {ie if ie is not None else 'none up to kmax'}; "
              f"quadrature error {h.error:.2e} ({h.nodes} nodes)")
