"""scripts/escape_validation.py: the stored raw steps are re-evaluated with the current
prediction (quantiles, censoring, KS), and the He3 cells are in the paper's units."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from loradyn.escape import escape_distribution

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "escape_validation.py"


@pytest.fixture(scope="module")
def V():
    spec = importlib.util.spec_from_file_location("escape_validation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(**kw):
    c = dict(act="linear", mu=0.5, d=300, x=1.0, lr=0.2, batch=60, seeds=400,
             status="simulated")
    c.update(kw)
    return c


def _draw(pred, n, seed):
    """Integer escape steps drawn from the predicted law (inverse CDF on a fine grid)."""
    t = np.linspace(1.0, 4 * pred.quantiles[0, -1], 20000)
    F = pred.cdf(0, t)
    u = np.random.default_rng(seed).random(n)
    return np.ceil(np.interp(u, F, t)).astype(int)


def test_he3_cells_use_the_paper_units(V):
    cells = [c for c in V.grid("full") if c["act"] == "he3"]
    assert cells and all(c["lr"] == pytest.approx(0.2 / 18) for c in cells)
    for c in cells:  # x = (K! K lr) d / B = 0.2 d / B: the batch of every other activation
        assert c["batch"] == max(1, round(0.2 * c["d"] / c["x"]))
    lin = {(c["d"], c["x"]): c["batch"] for c in V.grid("full") if c["act"] == "linear"}
    assert all(lin[(c["d"], c["x"])] == c["batch"] for c in cells)


def test_evaluate_recomputes_from_raw_steps(V):
    c = _cell()
    pred = escape_distribution("linear", [0.5], d=300, lr=0.2, batch=60)
    raw = _draw(pred, 400, 1)
    cap = int(1.6 * pred.quantiles[0, -1]) + 20
    raw[raw > cap] = -1
    r = V.evaluate(dict(c, raw=raw.tolist(), cap=cap))
    assert r["status"] == "done" and r["in_regime"]
    assert r["censored"] == int(np.sum(raw < 0)) and not r["cap_below_q95"]
    np.testing.assert_allclose(r["pred_q"], pred.quantiles[0])
    assert r["ks_p"] > 0.01  # drawn from the predicted law
    assert abs(r["sim_q"][3] / r["pred_q"][3] - 1) < 0.1
    # a shifted sample is rejected
    bad = V.evaluate(dict(c, raw=(raw + 15 * (raw > 0)).tolist(), cap=cap + 15))
    assert bad["ks_p"] < 1e-3


def test_censoring_below_the_predicted_q95_is_flagged_and_counts_in_ks(V):
    c = _cell()
    pred = escape_distribution("linear", [0.5], d=300, lr=0.2, batch=60)
    raw = _draw(pred, 400, 2)
    cap = int(pred.quantiles[0, 3])  # the simulation stopped at the predicted median
    cens = raw.copy()
    cens[cens > cap] = -1
    r = V.evaluate(dict(c, raw=cens.tolist(), cap=cap))
    assert r["cap_below_q95"] and r["censored"] > 100
    assert np.isinf(r["sim_q"][-1])
    assert r["ks_p"] > 0.01  # censoring alone is not a rejection
    # but seeds that should have escaped before the cap and did not are
    late = cens.copy()
    late[(late > 0) & (late > cap // 2)] = -1
    assert V.evaluate(dict(c, raw=late.tolist(), cap=cap))["ks_p"] < 1e-3


def test_markdown_lists_regime_and_scores(V):
    pred = escape_distribution("linear", [0.5], d=300, lr=0.2, batch=60)
    raw = _draw(pred, 400, 3)
    r = V.evaluate(_cell(raw=raw.tolist(), cap=int(2 * pred.quantiles[0, -1])))
    text = V.markdown([r], [], [])
    assert "Inside the regime" in text and "| linear | 0.5 | 300 | 1 | 60 | 400 |" in text
    assert "inside" in text.splitlines()[-1]
