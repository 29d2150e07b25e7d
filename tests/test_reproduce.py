"""Tests of ``loradyn reproduce``: runner, claims table, pending items, report, CLI.

Budget: about 1 minute on 2 cores (tiny ``test`` scale, theory figures and one small
simulation figure).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from loradyn.errors import LoradynError
from loradyn.reproduce import registry
from loradyn.reproduce.claims import HEADER, read_csv
from loradyn.reproduce.runner import EXPECTED, discover, parse_only, reproduce


@pytest.fixture(scope="module")
def theory_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    return reproduce(out, scale="test", only="fig6,fig8", progress=False)


def test_theory_figures_written(theory_run):
    res = theory_run
    assert [i.id for i in res.done] == ["fig6", "fig8"]
    for fid in ("fig6", "fig8"):
        for ext in ("png", "pdf"):
            f = res.out / "figures" / f"{fid}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000
    data = list((res.out / "data").glob("fig6*")) + list((res.out / "data").glob("fig8*"))
    assert len(data) >= 3
    assert (res.out / "run.json").is_file()
    html = (res.out / "index.html").read_text()
    assert "figures/fig6.png" in html and "figures/fig8.png" in html
    # offline: no remote resources
    assert "http://" not in html and "https://" not in html and "@import" not in html


def test_claims_csv_format(theory_run):
    path = theory_run.out / "claims.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == HEADER
    assert ",".join(rows[0]) == "id,section,statement,measured,expected,verdict"
    claims = read_csv(path)
    assert len(claims) == len(theory_run.claims) >= 5
    ids = [c.id for c in claims]
    assert len(set(ids)) == len(ids)
    for c in claims:
        assert c.verdict in ("holds", "fails", "inconclusive", "not-tested")
        assert c.measured and c.statement and c.expected
        # the measured column carries numbers computed in the run
        assert any(ch.isdigit() for ch in c.measured)


def test_claims_change_with_data(theory_run):
    # the energy claim is measured, not typed in: it quotes the computed a coefficients
    c = {c.id: c for c in theory_run.claims}["F-energy-damped"]
    assert "a = [1, 1, 1, 1, 1]" in c.measured and c.verdict == "holds"


def test_pending_items_listed(tmp_path, monkeypatch):
    discover()
    monkeypatch.delitem(registry._FIGURES, "fig13", raising=False)
    spec = registry.FigureSpec("fig12", "needs a missing module",
                               lambda ctx: registry.FigureOutput("x"),
                               requires=("no_such_module_for_loradyn_tests",), order=12)
    monkeypatch.setitem(registry._FIGURES, "fig12", spec)
    res = reproduce(tmp_path, scale="test", only="fig12,fig13", progress=False)
    status = {i.id: (i.status, i.reason) for i in res.items}
    assert status["fig12"][0] == "pending" and "no_such_module" in status["fig12"][1]
    assert status["fig13"][0] == "pending"
    assert not res.failed
    html = (tmp_path / "index.html").read_text()
    assert "fig12" in html and "fig13" in html and "pending" in html
    # the App. K claim is listed as not tested while fig13 is pending
    k = [c for c in res.claims if c.id == "K1"]
    assert k and k[0].verdict == "not-tested"


def test_all_expected_listed_when_absent(tmp_path, monkeypatch):
    discover()
    for fid in EXPECTED:
        monkeypatch.delitem(registry._FIGURES, fid, raising=False)
    res = reproduce(tmp_path, scale="test", progress=False)
    assert [i.id for i in res.pending] == list(EXPECTED)
    assert not res.done and not res.failed


def test_import_error_is_pending(tmp_path, monkeypatch):
    import loradyn.reproduce as pkg

    extra = tmp_path / "mods"
    extra.mkdir()
    (extra / "fig98.py").write_text("import no_such_module_for_loradyn_tests  # noqa\n")
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(extra)])
    res = reproduce(tmp_path / "out", scale="test", only="fig98", progress=False)
    assert res.items[0].status == "pending"
    assert "cannot import" in res.items[0].reason


def test_requirement_missing_at_run_time_is_pending(tmp_path, monkeypatch):
    """A figure raising ImportError itself (fig10/11: no data or GPU) is pending with its
    own reason; a missing module is reported as 'cannot import'."""
    def needs_data(ctx):
        raise ImportError("needs the cifar10 files and a GPU")

    def needs_module(ctx):
        import no_such_module_for_loradyn_tests  # noqa: F401

    monkeypatch.setitem(registry._FIGURES, "fig10",
                        registry.FigureSpec("fig10", "t", needs_data, order=10))
    monkeypatch.setitem(registry._FIGURES, "fig11",
                        registry.FigureSpec("fig11", "t", needs_module, order=11))
    res = reproduce(tmp_path, scale="test", only="fig10,fig11", progress=False)
    reason = {i.id: (i.status, i.reason) for i in res.items}
    assert reason["fig10"] == ("pending", "needs the cifar10 files and a GPU")
    assert reason["fig11"][0] == "pending" and reason["fig11"][1].startswith("cannot import")


def test_failure_is_reported_not_raised(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("broken figure")

    monkeypatch.setitem(registry._FIGURES, "fig11", registry.FigureSpec("fig11", "t", boom))
    res = reproduce(tmp_path, scale="test", only="fig11", progress=False)
    assert res.failed and "broken figure" in res.failed[0].reason
    assert (tmp_path / "fig11.error.txt").is_file()


def test_bad_input():
    with pytest.raises(LoradynError, match="unknown figure id"):
        parse_only("fig1,fig99")
    with pytest.raises(LoradynError, match="scale"):
        reproduce("/tmp/unused-loradyn", scale="huge")
    with pytest.raises(LoradynError, match="engine"):
        reproduce("/tmp/unused-loradyn", engine="gpu")
    assert parse_only(" FIG1 , fig2 ") == ["fig1", "fig2"]


def test_out_below_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LoradynError, match="--out"):
        reproduce(blocker / "sub", scale="test", only="fig6", progress=False)
    with pytest.raises(LoradynError, match="not a directory"):
        reproduce(blocker, scale="test", only="fig6", progress=False)


def _fig9_with(monkeypatch, tmp_path, pred, escape, diverged=None):
    """fig9's claims on a fake simulation: ``escape`` is (mu, seed) escape steps."""
    import numpy as np
    import xarray as xr

    from loradyn.reproduce import _common, fig9

    escape = np.asarray(escape)

    def fake(ctx, span=(0.0, 1.0), **config):
        mus, steps = list(config["mu"]), np.arange(0, config["steps"] + 1, 100)
        shape = (len(mus), escape.shape[1], steps.size)
        var = {"m": (("mu", "seed", "step"), np.full(shape, 0.1)),
               "u": (("mu", "seed", "step"), np.zeros(shape)),
               "mse": (("mu", "seed", "step"), np.ones(shape)),
               "escape_step": (("mu", "seed"), escape),
               "exit_step_theory": (("mu",), np.asarray(pred, dtype=float))}
        if diverged is not None:
            var["diverged"] = (("mu", "seed"), np.asarray(diverged))
        return xr.Dataset(var, coords={"mu": mus, "seed": np.arange(escape.shape[1]),
                                       "step": steps})

    monkeypatch.setattr(_common, "simulate", fake)
    out = fig9.make(registry.FigureContext(out=tmp_path / str(len(list(tmp_path.iterdir())))))
    return {c.id: c for c in out.claims}


def test_fig9_verdicts_follow_the_data(tmp_path, monkeypatch):
    """mu = (0.32, 0.6) with a 500-step budget; six seeds, so the tests can decide."""
    from loradyn.reproduce import fig9

    monkeypatch.setattr(fig9, "settings", lambda scale: dict(
        d=1000, batch=100, lr=0.2, steps=500, seeds=6, mus=(0.32, 0.6)))
    near, far = [-1] * 6, [80, 90, 70, 85, 95, 75]
    v = {k: c.verdict for k, c in _fig9_with(monkeypatch, tmp_path, [1e6, 100.0],
                                             [near, far]).items()}
    assert v == {"I-singular-delay": "holds", "P1-he3-prediction": "holds"}
    # the far mu does not escape either: no delay, and the prediction is wrong for it
    v = {k: c.verdict for k, c in _fig9_with(monkeypatch, tmp_path, [1e6, 100.0],
                                             [near, [-1] * 6]).items()}
    assert v == {"I-singular-delay": "inconclusive", "P1-he3-prediction": "inconclusive"}
    # the near mu escapes first: the delay claim fails
    v = {k: c.verdict for k, c in _fig9_with(monkeypatch, tmp_path, [1e6, 100.0],
                                             [[10, 12, 11, 9, 13, 10], far]).items()}
    assert v["I-singular-delay"] == "fails"
    # one seed: a test cannot decide
    monkeypatch.setattr(fig9, "settings", lambda scale: dict(
        d=1000, batch=100, lr=0.2, steps=500, seeds=1, mus=(0.32, 0.6)))
    v = {k: c.verdict for k, c in _fig9_with(monkeypatch, tmp_path, [1e6, 100.0],
                                             [[-1], [80]]).items()}
    assert v == {"I-singular-delay": "inconclusive", "P1-he3-prediction": "inconclusive"}
    # every prediction within a factor 1.5 of the budget: nothing to check, not a pass
    v = {k: c.verdict for k, c in _fig9_with(monkeypatch, tmp_path, [450.0, 600.0],
                                             [[-1], [80]]).items()}
    assert v["P1-he3-prediction"] == "not-tested"


def test_diverged_trajectories_are_not_non_escapes(tmp_path, monkeypatch):
    """A diverged trajectory is excluded and counted, never read as 'did not escape'."""
    from loradyn.reproduce import fig9

    monkeypatch.setattr(fig9, "settings", lambda scale: dict(
        d=1000, batch=100, lr=0.2, steps=500, seeds=6, mus=(0.32, 0.6)))
    far = [80, 90, 70, 85, 95, 75]
    # at the near mu every trajectory diverged (escape_step -1): no evidence of a delay
    div = [[True] * 6, [False] * 6]
    c = _fig9_with(monkeypatch, tmp_path, [1e6, 100.0], [[-1] * 6, far], diverged=div)
    assert c["I-singular-delay"].verdict == "inconclusive"
    assert "6 diverged trajectories excluded" in c["I-singular-delay"].measured
    # read as non-escapes they would have made the claim hold
    c = _fig9_with(monkeypatch, tmp_path, [1e6, 100.0], [[-1] * 6, far])
    assert c["I-singular-delay"].verdict == "holds"


@pytest.mark.parametrize("fid,cid", [("fig1", "L-later-escape"),
                                     ("fig3", "A1-same-phenomenology"),
                                     ("fig5", "E3-overtraining"), ("fig7", "E5-plateau")])
def test_nothing_learned_is_not_a_monotone_trend(tmp_path, monkeypatch, fid, cid):
    """A run where no mu escapes (all times inf) cannot tell an ordering in mu: the trend
    test is impossible (every outcome tied), so the verdict is inconclusive, never holds."""
    import importlib

    import numpy as np
    import xarray as xr

    from loradyn.config import RunConfig
    from loradyn.reproduce import _common

    def stuck(ctx, span=(0.0, 1.0), **config):
        mus, steps = list(config["mu"]), np.arange(0, config["steps"] + 1, 100)
        shape = (len(mus), 1, steps.size)
        var = {k: (("mu", "seed", "step"), np.full(shape, v))
               for k, v in (("m", 0.01), ("u", 0.0), ("p", 0.01), ("mse", 1.0))}
        var["escape_step"] = (("mu", "seed"), np.full((len(mus), 1), -1))
        var["escape_time"] = (("mu", "seed"), np.full((len(mus), 1), np.inf))
        return xr.Dataset(var, coords={"mu": mus, "seed": [0], "step": steps},
                          attrs={"config": RunConfig(**config).to_json()})

    monkeypatch.setattr(_common, "simulate", stuck)
    mod = importlib.import_module(f"loradyn.reproduce.{fid}")
    out = mod.make(registry.FigureContext(out=tmp_path, scale="test"))
    assert {c.id: c.verdict for c in out.claims}[cid] == "inconclusive"


def test_fig14_search_phase_verdict_fails_on_nan():
    import numpy as np

    from loradyn.reproduce.fig14 import search_phase_verdict

    ok = {0: [10.0, 10.5, 10.2], 1: [30.0, 31.0, 30.5], 2: [50.0, 50.5, 51.0]}
    assert search_phase_verdict(ok)[2]
    assert not search_phase_verdict({**ok, 2: [50.0, 90.0, 51.0]})[2]  # rank-dependent
    assert not search_phase_verdict({0: [10.0, 10.1], 1: [10.5, 10.4]})[2]  # same setting
    # a rank where no seed escaped (NaN) must not be skipped
    assert not search_phase_verdict({**ok, 2: [50.0, np.nan, 51.0]})[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loradyn", "reproduce", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_unknown_figure(tmp_path):
    r = _cli("--only", "fig99", "--out", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown figure id 'fig99'")
    r = _cli("--scale", "huge", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:")


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from loradyn.cli import main

    (tmp_path / "f").write_text("a file")
    for bad in (("--engine", "gpu"), ("--only", ",,"), ("--out", str(tmp_path / "f" / "sub"))):
        with pytest.raises(SystemExit) as exc:
            main(["reproduce", "--out", str(tmp_path / "o"), "--only", "fig6", *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


def test_cli_runs_one_figure(tmp_path):
    r = _cli("--only", "fig6", "--out", str(tmp_path / "rep"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and (tmp_path / "rep" / "index.html").is_file()
    assert (tmp_path / "rep" / "claims.csv").is_file()


def test_simulation_figure_end_to_end(tmp_path):
    """One simulation figure at the tiny scale: theory curve and SGD points in one dataset."""
    res = reproduce(tmp_path, scale="test", only="fig1", progress=False)
    assert [i.status for i in res.items] == ["done"]
    rows = list(csv.DictReader(open(Path(tmp_path) / "data" / "fig1_tau_points.csv")))
    assert rows, "no simulated tau points"
    ratios = [float(r["ratio"]) for r in rows if r["ratio"] not in ("nan", "")]
    assert ratios and all(0.2 < r < 5 for r in ratios)
    ids = {c.id for c in res.claims}
    assert {"L-monotone", "IE1-relu-dip", "P1-sgd-escape"} <= ids


def test_rerun_reuses_finished_simulations(tmp_path, monkeypatch):
    """A reproduce run killed and started again reuses every simulation already on disk."""
    from loradyn import engines
    from loradyn.reproduce import _common

    out = tmp_path / "rep"
    first = reproduce(out, scale="test", only="fig9", progress=False)
    cached = sorted((out / "data" / "results").glob("*.nc"))
    assert cached, "no simulation was stored in the run's store (OUT/data/results)"
    before = tmp_path / "fig9_first.nc"
    before.write_bytes((out / "data" / "fig9_he3.nc").read_bytes())

    # a new process has an empty in-memory cache and must not simulate again
    monkeypatch.setattr(_common, "_SIM_CACHE", {})

    def fail(*args, **kwargs):
        raise AssertionError("simulated again although the result was on disk")

    monkeypatch.setattr(engines, "simulate", fail)
    second = reproduce(out, scale="test", only="fig9", progress=False)
    assert [i.status for i in second.items] == ["done"]
    assert [c.measured for c in second.claims] == [c.measured for c in first.claims]
    import xarray as xr

    with xr.open_dataset(out / "data" / "fig9_he3.nc") as a, xr.open_dataset(before) as b:
        xr.testing.assert_identical(a.load(), b.load())


def test_an_older_output_keeps_its_cache_store(tmp_path, monkeypatch):
    """An output made when the store lived in OUT/cache is reused in place, by a rerun and
    by --from-data (the store now lives in OUT/data, next to the figures' data files)."""
    from loradyn import engines
    from loradyn.reproduce import _common

    out = tmp_path / "old"
    first = reproduce(out, scale="test", only="fig9", progress=False)
    (out / "cache").mkdir()
    (out / "data" / "results").rename(out / "cache" / "results")  # the old layout
    monkeypatch.setattr(_common, "_SIM_CACHE", {})

    def fail(*args, **kwargs):
        raise AssertionError("simulated again although the result was in OUT/cache")

    monkeypatch.setattr(engines, "simulate", fail)
    again = reproduce(out, scale="test", only="fig9", progress=False)
    assert [i.status for i in again.items] == ["done"]
    assert not (out / "data" / "results").exists()
    rebuilt = reproduce(tmp_path / "new", scale="test", only="fig9", progress=False,
                        from_data=out)
    assert [i.status for i in rebuilt.items] == ["done"]
    assert [c.measured for c in rebuilt.claims] == [c.measured for c in first.claims]


def test_every_registered_figure_runs_at_test_scale(tmp_path):
    """The whole reproduction at the tiny scale: no figure may fail (make demo broke on a
    LinAlgError in fig13 that only the full run reached). Pending is allowed only for items
    that need what CI does not have (real datasets, a GPU)."""
    res = reproduce(tmp_path, scale="test", progress=False)
    assert not res.failed, [(i.id, i.reason) for i in res.failed]
    for item in res.pending:
        assert item.id in ("fig10", "fig11"), (item.id, item.reason)
    registered_ids = {s.id for s in registry.registered()}
    done = {i.id for i in res.done}
    assert registered_ids - {"fig10", "fig11"} <= done
    for item in res.done:
        for f in item.output.files:
            assert Path(f).is_file() and Path(f).stat().st_size > 0, (item.id, f)
    assert not any(Path(tmp_path).glob("*.error.txt"))


def test_report_colours_four_verdicts_and_links_the_differences(theory_run):
    from loradyn.reproduce.claims import summary
    from loradyn.reproduce.report import CSS

    html = (theory_run.out / "index.html").read_text()
    for v in registry.VERDICTS:
        assert f".v-{v}{{" in CSS
    counts = summary(theory_run.claims)
    assert "id='claims-summary'" in html
    for v in registry.VERDICTS:
        assert f"data-{v}='{counts[v]}'" in html
    assert "paper-differences.md" in html


def test_every_claim_quotes_the_paper(theory_run):
    """Claims of the paper carry its words: 'Paper: "..."' (their quotes are checked
    verbatim against the text in test_paper_quotes)."""
    from loradyn.reproduce.paper import QUOTES

    for c in theory_run.claims:
        if "(loradyn)" in c.section:
            continue
        assert c.id.split("/")[0] in QUOTES, c.id
        assert c.statement.startswith('Paper: "'), c.id


def test_paper_quotes_are_verbatim():
    """Every fragment of every quote occurs in the surviving paper text (when available)."""
    import os
    import re

    from loradyn.reproduce.paper import QUOTES

    path = Path(os.environ.get("LORADYN_PAPER_TEXT",
                               "/work/shared/paper/when-pretraining-hurts-lora.txt"))
    if not path.is_file():
        pytest.skip(f"paper text not found at {path} (set LORADYN_PAPER_TEXT)")
    text = re.sub(r"\s+", " ", path.read_text())
    for cid, q in QUOTES.items():
        for frag in q.split(" ... "):
            assert re.sub(r"\s+", " ", frag) in text, (cid, frag[:60])
