"""CLI and figures of the two-layer model: ``loradyn twolayer tau|simulate``, fig13/fig14."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from loradyn.cli import app
from loradyn.twolayer import collective_rate

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["twolayer", *args])


def test_tau_csv_header_and_values():
    r = _run("tau", "--activation", "linear", "--mu", "0.2,0.5,0.9", "--rank", "1,2,4",
             "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["rank", "lambda_plus", "tau"]
    assert [int(x[0]) for x in rows[1:]] == [1, 2, 4]
    lam = np.array([float(x[1]) for x in rows[1:]])
    np.testing.assert_allclose(lam, collective_rate("linear", [0.2, 0.5, 0.9]), rtol=1e-12)
    np.testing.assert_allclose([float(x[2]) for x in rows[1:]], 1 / lam, rtol=1e-12)


def test_tau_he2_table_and_json():
    r = _run("tau", "-a", "he2-norm", "--mu", "0.3,0.6", "--rank", "2")
    assert r.exit_code == 0 and "lambda_plus" in r.stdout
    r = _run("tau", "-a", "he2-norm", "--mu", "0.3,0.6", "--rank", "2", "--format", "json")
    out = json.loads(r.stdout)
    assert out["rows"][0]["rank"] == 2
    assert out["rows"][0]["lambda_plus"] == pytest.approx(collective_rate("he2-norm", [0.3, 0.6]))


@pytest.mark.parametrize("act", ["erf", "relu", "sigmoid", "tanh", "he3"])
def test_tau_csv_for_every_activation(act):
    r = _run("tau", "--activation", act, "--mu", "0.3,0.3,1", "--rank", "1,2", "--format",
             "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["rank", "lambda_plus", "tau"] and len(rows) == 3
    lam = [float(x[1]) for x in rows[1:]]
    assert lam[0] > 0 and lam[1] == pytest.approx(lam[0], rel=1e-10)


def test_simulate_from_scratch_and_norm_auto():
    r = _run("simulate", "--engine", "reduced", "--activation", "erf", "--mu", "0.5,0.5,0.5",
             "--from-scratch", "--norm", "auto", "--d", "100", "--lr", "0.05", "--batch", "20",
             "--steps", "20", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["config"]["from_scratch"] is True and out["config"]["rank"] == 3
    assert [row["rank"] for row in out["rows"]] == [3]


def test_simulate_json_out_and_plot(tmp_path):
    nc, png = tmp_path / "run.nc", tmp_path / "loss.png"
    r = _run("simulate", "--engine", "reduced", "--mu", "0.4,0.6", "--rank", "1,2", "--d", "200",
             "--lr", "0.05", "--batch", "20", "--steps", "60", "--seeds", "2", "--out", str(nc),
             "--plot", str(png), "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [row["rank"] for row in out["rows"]] == [1, 2]
    assert out["config"]["ranks"] == [1, 2] and out["config"]["d"] == 200
    ds = xr.open_dataset(nc)
    assert dict(ds.sizes)["rank"] == 2 and "config" in ds.attrs
    ds.close()
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    "args,msg",
    [(["tau", "-a", "relux", "--mu", "0.5"], "unknown activation"),
     (["tau", "-a", "relu", "--mu", "0,0.5"], "mu_k > 0"),
     (["tau", "-a", "erf", "--mu", "0.5", "--label", "cube"], "label"),
     (["tau", "--mu", "0.5,abc"], "comma list"),
     (["tau", "--mu", "0.5", "--rank", "0"], "integers >= 1"),
     (["tau", "--mu", "0.5,0.5", "--rank", "1e9"], "Jacobian"),  # was a MemoryError
     (["simulate", "--engine", "fast"], "engine"),
     (["simulate", "--mu", "0.5,1.2"], "mu")],
)
def test_bad_input_is_one_line_error(args, msg, capsys):
    from loradyn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["twolayer", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "Traceback" not in err and len(err.splitlines()) <= 3


@pytest.mark.parametrize("fid", ["fig13", "fig14"])
def test_figures_at_test_scale(tmp_path, fid):
    import importlib

    from loradyn.reproduce.registry import FigureContext

    mod = importlib.import_module(f"loradyn.reproduce.{fid}")
    out = mod.make(FigureContext(out=tmp_path, scale="test"))
    assert all(p.exists() for p in out.files) and {p.suffix for p in out.files} == {".png", ".pdf"}
    assert all(p.exists() for p in out.data)
    ids = {c.id for c in out.claims}
    assert {"fig13": {"K1", "K1-finite-d", "K1b", "K1/erf", "K1/relu"},
            "fig14": {"K2", "K2b", "K3-erf", "K3-relu", "K4-erf", "K4-relu"}}[fid] == ids
    from loradyn.reproduce.registry import VERDICTS

    # a real verdict: the data were made (inconclusive is a tested answer, not-tested is not)
    assert all(c.verdict in VERDICTS and c.verdict != "not-tested" for c in out.claims)
    # claims quote measured numbers
    assert all(any(ch.isdigit() for ch in c.measured) for c in out.claims)


def test_unwritable_output_is_one_line_error_before_simulating(tmp_path, capsys, monkeypatch):
    from loradyn.cli import main
    from loradyn.cli import twolayer as cli_mod

    def boom(*a, **k):
        raise AssertionError("simulated although the output cannot be written")

    monkeypatch.setattr(cli_mod, "simulate", boom)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for opt, target in (("--out", blocker / "run.nc"), ("--plot", blocker / "loss.png"),
                        ("--plot", tmp_path)):
        with pytest.raises(SystemExit) as exc:
            main(["twolayer", "simulate", "--steps", "10", opt, str(target)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err


def test_escape_csv_per_rank_matches_the_library():
    from loradyn.twolayer.escape import escape_distribution

    r = _run("escape", "--mu", "0.2,0.6", "--rank", "1,2,4", "--d", "1000", "--lr", "0.1",
             "--batch", "200", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["rank", "q05", "q10", "q25", "q50", "q75", "q90", "q95", "mean"]
    lib = escape_distribution([0.2, 0.6], [1, 2, 4], d=1000, lr=0.1, batch=200)
    np.testing.assert_allclose([[float(v) for v in row[1:8]] for row in rows[1:]],
                               lib.quantiles)
    r = _run("escape", "--mu", "0.2,0.6", "--rank", "1,2", "--m0", "0.05", "--threshold",
             "0.4", "--format", "json")
    assert r.exit_code == 0, r.output
    assert [row["rank"] for row in json.loads(r.stdout)["rows"]] == [1, 2]


@pytest.mark.parametrize("args,msg", [
    (["--mu", "0.2,1.6"], "outside"),
    (["--mu", "0.2,0.6", "--activation", "erf"], "linear"),
    (["--mu", "0.2,0.6", "--m0", "[[0.1,0]]"], "number --m0"),
    (["--mu", "0.2,0.6", "--rank", "0"], "rank"),
])
def test_escape_bad_input_is_one_line_exit_2(args, msg, capsys):
    from loradyn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["twolayer", "escape", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1, err
