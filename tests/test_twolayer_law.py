"""Two-layer engines in law for erf and relu: dense vs reduced (two-sample KS), and the ODE
against the seed-averaged reduced engine at large d."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from loradyn.twolayer import TwoLayerConfig, run

SEEDS = 64


def ks_dense_reduced(act: str, rank: int, *, seeds: int = SEEDS, d: int = 300,
                     from_scratch: bool = False) -> dict[str, float]:
    """p-values of two-sample KS tests, dense vs reduced, on the escape steps and on the loss
    at the last step (lr d / B = 1, K = 3, spherical update, random starts, readout none)."""
    cfg = TwoLayerConfig(mu=[0.2, 0.3, 0.4], rank=rank, activation=act, d=d,
                         lr=0.2, batch=d // 5, steps=100, seeds=seeds, record_every=50,
                         threshold=0.3, from_scratch=from_scratch)
    dense = run(cfg, "dense")
    red = run(cfg.replace(seed0=10_000), "reduced")
    e1, e2 = dense.escape_step.values, red.escape_step.values
    l1, l2 = (np.nan_to_num(x.loss.isel(step=-1).values, nan=1e300) for x in (dense, red))
    return {"escape": float(stats.ks_2samp(e1, e2).pvalue),
            "late_loss": float(stats.ks_2samp(l1, l2).pvalue),
            "escaped": float(min(np.mean(e1 >= 0), np.mean(e2 >= 0)))}


@pytest.mark.parametrize("act", ["erf", "relu"])
@pytest.mark.parametrize("rank", [1, 2])
def test_dense_and_reduced_agree_in_law(act, rank):
    """K = 3, 64 seeds per engine, d = 300: the KS tests on escape steps and late losses do
    not reject at 1% (p-values printed with -s)."""
    p = ks_dense_reduced(act, rank)
    print(f"KS dense vs reduced {act} r={rank}: {p}")
    assert p["escaped"] > 0.5  # the escape statistic is informative
    assert p["escape"] > 0.01 and p["late_loss"] > 0.01, p


def test_dense_and_reduced_agree_in_law_from_scratch():
    p = ks_dense_reduced("erf", 3, seeds=48, from_scratch=True)
    print(f"KS dense vs reduced from scratch erf: {p}")
    assert p["escape"] > 0.01 and p["late_loss"] > 0.01, p


def test_ode_matches_seed_averaged_reduced_erf():
    """d = 1e4, lr d / B = 1, erf, K = 3: the ODE (with the finite-step term) stays within
    4 standard errors + 0.02 of the seed mean of the reduced engine at every recorded point,
    from the same initial draws."""
    cfg = TwoLayerConfig(mu=[0.2, 0.3, 0.4], rank=2, activation="erf", d=10_000,
                         lr=0.1, batch=1000, steps=300, seeds=8, record_every=20)
    red = run(cfg, "reduced").loss.values
    ode = run(cfg, "ode").loss.mean("seed").values
    mean, se = red.mean(0), red.std(0, ddof=1) / np.sqrt(red.shape[0])
    gap = np.abs(ode - mean)
    assert np.all(gap <= 4 * se + 0.02), (gap, se)
    assert mean[-1] < 0.7 * mean[0]  # the run left the start: the comparison covers learning
