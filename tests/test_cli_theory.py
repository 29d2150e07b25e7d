"""CLI of the theory engine: output formats, plot, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from loradyn.cli import main
from loradyn.linearization import singularities, tau


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_tau_csv_matches_library(capsys):
    code, out, _ = run(["tau", "--teacher", "erf", "--mu", "0:1:11", "--format", "csv"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "mu,a,b,lambda_plus,tau"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 11
    lib = tau("erf", np.linspace(0, 1, 11))
    assert np.allclose([float(r["mu"]) for r in rows], np.linspace(0, 1, 11))
    assert np.array_equal([float(r["tau"]) for r in rows], lib.tau)  # exact round trip
    assert rows[-1]["tau"] == "inf"


def test_tau_comma_list_student_label_units_json(capsys):
    code, out, _ = run(["tau", "--teacher", "he3", "--student", "he3", "--label", "square",
                        "--mu", "0.2,0.6", "--units", "paper", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["units"] == "paper" and len(data["rows"]) == 2
    lib = tau("he3", [0.2, 0.6], label="square", units="paper")
    assert np.allclose([r["tau"] for r in data["rows"]], lib.tau, rtol=1e-15)


def test_tau_table_and_plot(capsys, tmp_path):
    png = tmp_path / "tau.png"
    code, out, err = run(["tau", "--teacher", "relu", "--mu", "0:1:21", "--plot", str(png)],
                         capsys)
    assert code == 0 and "lambda_plus" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tau_missing_plot_folder_prints_only_the_error(capsys, tmp_path):
    code, out, err = run(["tau", "--teacher", "erf", "--mu", "0.5", "-f", "csv",
                          "--plot", str(tmp_path / "missing" / "tau.png")], capsys)
    assert code == 2 and out == ""  # no table printed before the error
    assert err.startswith("error: ") and "does not exist" in err


def test_correlation_loss_option(capsys):
    code, out, _ = run(["tau", "-t", "linear", "--loss", "correlation", "--mu", "0.1,0.9",
                        "-f", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    # correlation loss, linear: a = 0, b = -1, tau = 1 for every mu (App. H)
    assert code == 0 and all(float(r["b"]) == pytest.approx(-1.0) for r in rows)
    assert all(abs(float(r["a"])) < 1e-12 and float(r["tau"]) == pytest.approx(1.0) for r in rows)


def test_singularities_csv(capsys):
    code, out, _ = run(["singularities", "--teacher", "he10", "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and out.splitlines()[0] == "mu,a,b"
    lib = singularities("he10")
    assert len(rows) == len(lib) == 2
    assert np.allclose([float(r["mu"]) for r in rows], [s.mu for s in lib], atol=1e-12)
    code, out, _ = run(["singularities", "--teacher", "he4", "--format", "csv"], capsys)
    assert code == 0 and out == "mu,a,b\n"  # header only when there is none
    code, out, _ = run(["singularities", "--teacher", "he3", "--format", "json"], capsys)
    assert json.loads(out)["rows"][0]["mu"] == pytest.approx(0.3207243, abs=1e-6)
    code, out, _ = run(["singularities", "--teacher", "he5"], capsys)
    assert code == 0 and "0.4253" in out


def test_hermite_command(capsys):
    code, out, _ = run(["hermite", "--activation", "he4", "--variance", "0.5", "--kmax", "6",
                        "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["information_exponent"] == 2
    assert [r["k"] for r in data["rows"]] == list(range(7))
    assert data["rows"][4]["coeff"] == pytest.approx(1.0)
    code, out, _ = run(["hermite", "--activation", "relu", "--format", "csv"], capsys)
    assert out.splitlines()[0] == "k,coeff,normalized" and len(out.splitlines()) == 12
    code, out, _ = run(["hermite", "--activation", "he3"], capsys)
    assert code == 0 and "information exponent: 3" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["tau", "--teacher", "erf", "--mu", "0:1:3", "--format", "xml"], "format"),
        (["tau", "--teacher", "erf", "--mu", "0:1:3", "--units", "years"], "units"),
        (["tau", "--teacher", "erf", "--mu", "0:1:3", "--loss", "hinge"], "loss"),
        (["tau", "--teacher", "erf", "--mu", "0:1:3", "--label", "cube"], "label"),
        (["singularities", "--teacher", "he3+"], "he3+"),
        (["hermite", "--activation", "erf", "--variance", "-1"], "variance"),
        (["hermite", "--activation", "erf", "--kmax", "500"], "kmax"),
    ],
)
def test_bad_options_in_process(args, needle, capsys):
    code, out, err = run(args, capsys)
    assert code == 2 and err.startswith("error: ") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["tau", "--teacher", "nope", "--mu", "0:1:5"], "unknown activation 'nope'"),
        (["tau", "--teacher", "erf", "--mu", "0:1.5:5"], "outside [0, 1]"),
        (["tau", "--teacher", "erf", "--mu", "0.9:0.1:5"], "START"),
    ],
)
def test_bad_input_one_line_exit_2_subprocess(args, needle):
    proc = subprocess.run([sys.executable, "-m", "loradyn", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
