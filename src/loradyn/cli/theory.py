"""CLI commands of the theory engine: ``tau``, ``singularities``, ``hermite``.

Each command parses its options, calls one library function and prints the result as a
rich table, CSV or JSON. No physics is computed here.
"""

from __future__ import annotations

import sys

import typer

from ..hermite import hermite_coefficients
from ..io import check_outputs, write_errors
from ..linearization import parse_mu_spec, plot_tau, singularities, tau
from ._app import app
from ._outputs import check_format, emit_rows

FORMATS = ("table", "csv", "json")


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
    f = check_format(fmt, FORMATS)
    mus = parse_mu_spec(mu)
    check_outputs({}, plots={"--plot": plot})  # before any output: only the error is printed
    res = tau(teacher, mus, student=student, label=label, loss=loss, units=units)
    cols = ["mu", "a", "b", "lambda_plus", "tau"]
    meta = {"problem": res.problem, "units": res.units, "scale": res.scale}
    emit_rows(res.rows(), cols, f, f"tau: {res.problem} ({res.units} units)", meta)
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
    f = check_format(fmt, FORMATS)
    sings = singularities(teacher, student=student, label=label, loss=loss)
    rows = [{"mu": s.mu, "a": s.a, "b": s.b} for s in sings]
    name = f"{teacher}" + (f"/{student}" if student else "") + (
        f" label={label}" if label not in ("identity", None) else ""
    )
    emit_rows(rows, ["mu", "a", "b"], f, f"singularities: {name}", {"problem": name})


@app.command("hermite")
def hermite_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help="Activation name."),
    variance: float = typer.Option(1.0, "--variance", "-q", help="Pre-activation variance Q."),
    kmax: int = typer.Option(10, "--kmax", "-k", help="Highest Hermite degree."),
    label: str = typer.Option("identity", "--label", help="Expand T(activation)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Hermite coefficients c_k(Q) of an activation and its information exponent."""
    f = check_format(fmt, FORMATS)
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
    emit_rows(rows, ["k", "coeff", "normalized"], f, title, meta)
    if f == "table":
        print(f"information exponent: {ie if ie is not None else 'none up to kmax'}; "
              f"quadrature error {h.error:.2e} ({h.nodes} nodes)")
