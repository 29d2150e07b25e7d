"""scripts/escape_validation.py: the stored raw steps are re-evaluated with the current
prediction (quantiles, censoring, KS), the He3 cells are in the paper's units, the seed rule,
and the prediction against the shipped exact-engine data of the validation.

``scripts/data/escape_validation.json.gz`` holds the raw escape steps of every simulated cell
of docs/theory.md s. 12 (reduced engine, exact in law). A change of the prediction that
breaks the targets on them fails here, without re-simulating: the hardest cells (He3 at
``B = 60``, the largest multiplicative noise) and every tenth cell with ``lr d / B <= 1``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
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


BUNDLE = SCRIPT.parent / "data" / "escape_validation.json.gz"


def _cells() -> list[dict]:
    data = json.loads(gzip.decompress(BUNDLE.read_bytes()))
    cells = [c for c in data["cells"] if c.get("status") == "simulated" and c["x"] <= 1]
    hard = [c for c in cells if c["act"] == "he3" and c["d"] == 300 and c["batch"] == 60
            and c["mu"] >= 0.5]
    return hard + cells[::10]


def test_bundle_holds_the_grid():
    data = json.loads(gzip.decompress(BUNDLE.read_bytes()))
    done = [c for c in data["cells"] if c.get("status") == "simulated"]
    assert len(done) >= 500 and data["runs"]
    assert all(len(c["raw"]) >= c["seeds"] for c in done)  # seeds only ever added


@pytest.mark.parametrize("cell", _cells(), ids=lambda c: f"{c['act']}-mu{c['mu']}-d{c['d']}"
                         f"-x{c['x']}")
def test_prediction_meets_the_targets_on_stored_cells(V, cell):
    r = V.evaluate(cell)
    assert r["status"] == "done" and r["in_regime"]
    pq, sq = r["pred_q"], r["sim_q"]
    assert abs(pq[3] / sq[3] - 1) <= 0.10  # median
    assert abs(pq[1] / sq[1] - 1) <= 0.15 and abs(pq[5] / sq[5] - 1) <= 0.15  # q10, q90


def test_seed_rule_from_the_predicted_density(V):
    # the standard error of each simulated quantile must be at most a quarter of its
    # tolerance: a wide law (He3 at B = 60) needs more than the 400 seeds, a narrow
    # one (linear, large d) keeps the minimum; lr d / B > 1 (no quantile target) keeps it too
    def cell(act, mu, d, x):
        lr = V.lr_for(act)
        return {"act": act, "mu": mu, "d": d, "x": x, "lr": lr, "seeds": 400,
                "batch": max(1, round(V.eta_eff(act) * d / x))}

    wide = cell("he3", 0.5, 300, 1.0)
    n_wide = V.required_seeds(wide, V.predict(wide))
    assert 500 < n_wide <= V.MAX_SEEDS
    narrow = cell("linear", 0.5, 1000, 0.1)
    assert V.required_seeds(narrow, V.predict(narrow)) == 400
    noisy = cell("he3", 0.5, 300, 4.0)
    assert V.required_seeds(noisy, V.predict(noisy)) == 400
