"""The escape-time prediction against the shipped exact-engine data of the validation.

``scripts/data/escape_validation.json.gz`` holds the raw escape steps of every simulated cell
of docs/theory.md s. 12 (reduced engine, exact in law). A change of the prediction that
breaks the targets on them fails here, without re-simulating: the hardest cells (He3 at
``B = 60``, the largest multiplicative noise) and every tenth cell with ``lr d / B <= 1``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "scripts" / "data" / "escape_validation.json.gz"


def _cells() -> list[dict]:
    data = json.loads(gzip.decompress(BUNDLE.read_bytes()))
    cells = [c for c in data["cells"] if c.get("status") == "simulated" and c["x"] <= 1]
    hard = [c for c in cells if c["act"] == "he3" and c["d"] == 300 and c["batch"] == 60
            and c["mu"] >= 0.5]
    return hard + cells[::10]


@pytest.fixture(scope="module")
def validation():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import escape_validation
    finally:
        sys.path.pop(0)
    return escape_validation


def test_bundle_holds_the_grid():
    data = json.loads(gzip.decompress(BUNDLE.read_bytes()))
    done = [c for c in data["cells"] if c.get("status") == "simulated"]
    assert len(done) >= 500 and data["runs"]
    assert all(len(c["raw"]) >= c["seeds"] for c in done)  # seeds only ever added


@pytest.mark.parametrize("cell", _cells(), ids=lambda c: f"{c['act']}-mu{c['mu']}-d{c['d']}"
                         f"-x{c['x']}")
def test_prediction_meets_the_targets_on_stored_cells(validation, cell):
    r = validation.evaluate(cell)
    assert r["status"] == "done" and r["in_regime"]
    pq, sq = r["pred_q"], r["sim_q"]
    assert abs(pq[3] / sq[3] - 1) <= 0.10  # median
    assert abs(pq[1] / sq[1] - 1) <= 0.15 and abs(pq[5] / sq[5] - 1) <= 0.15  # q10, q90


def test_seed_rule_from_the_predicted_density(validation):
    # the standard error of each simulated quantile must be at most a quarter of its
    # tolerance: a wide law (He3 at B = 60) needs more than the 400 seeds, a narrow
    # one (linear, large d) keeps the minimum; lr d / B > 1 (no quantile target) keeps it too
    def cell(act, mu, d, x):
        lr = validation.lr_for(act)
        return {"act": act, "mu": mu, "d": d, "x": x, "lr": lr, "seeds": 400,
                "batch": max(1, round(validation.eta_eff(act) * d / x))}

    wide = cell("he3", 0.5, 300, 1.0)
    n_wide = validation.required_seeds(wide, validation.predict(wide))
    assert 500 < n_wide <= validation.MAX_SEEDS
    narrow = cell("linear", 0.5, 1000, 0.1)
    assert validation.required_seeds(narrow, validation.predict(narrow)) == 400
    noisy = cell("he3", 0.5, 300, 4.0)
    assert validation.required_seeds(noisy, validation.predict(noisy)) == 400
