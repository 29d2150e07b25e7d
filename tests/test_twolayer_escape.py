"""Two-layer escape prediction (loradyn.twolayer.escape): the reduction to the single-index
model, agreement with the two-layer reduced engine per rank, bad input. About 10 s."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from loradyn.errors import LoradynError
from loradyn.escape import QUANTILES
from loradyn.escape import escape_distribution as single
from loradyn.twolayer import TwoLayerConfig, simulate
from loradyn.twolayer.escape import escape_distribution


def test_k1_is_the_single_index_model():
    r = escape_distribution(0.4, [1, 3], K=1, d=500, lr=0.2, batch=100, radius=0.5)
    s1 = single("linear", [0.4], d=500, lr=0.2, batch=100, radius=0.5)
    s3 = single("linear", [0.4], d=500, lr=0.2, batch=100, radius=0.5, starts=3)
    np.testing.assert_allclose(r.quantiles, np.vstack([s1.quantiles, s3.quantiles]))
    ds = r.to_dataset()
    assert list(ds["rank"].values) == [1, 3] and ds.escape_quantile.shape == (2, 7)
    assert r.mean[1] < r.mean[0]  # three directions: the first escapes earlier


def _check_against_the_engine(mus: list[float], rank: int) -> None:
    """Median within 10% and KS not rejected at 1% against 150 two-layer reduced-engine
    seeds (K = len(mus), d = 240, B = 60, lr = 0.1, R = 0.35, uniform start)."""
    d, B, lr, R = 240, 60, 0.1, 0.35
    pred = escape_distribution(mus, [rank], d=d, lr=lr, batch=B, radius=R)
    steps = int(1.6 * pred.quantiles[0, -1]) + 20
    cfg = TwoLayerConfig(mu=mus, rank=rank, activation="linear", d=d, lr=lr, batch=B,
                         steps=steps, seeds=150, threshold=R, record_every=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = simulate(cfg, [rank], "reduced", stop_on_escape=True)
    e = ds.escape_step.values[0].astype(float)
    e[e < 0] = np.inf
    sim = np.quantile(e, QUANTILES)
    assert abs(pred.quantiles[0, 3] / sim[3] - 1) < 0.10
    jit = e - np.random.default_rng(0).random(e.size)
    assert stats.kstest(jit, lambda t: pred.cdf(0, t)).pvalue > 0.01


@pytest.mark.parametrize("rank", [1, 3])
def test_agrees_with_the_two_layer_reduced_engine(rank):
    _check_against_the_engine([0.5, 0.5], rank)


def test_unequal_alignments_enter_only_through_the_collective_mismatch():
    # delta = sum_k (1 - mu_k) w*_k: the law depends on |delta| only (uniform start), the same
    # as equal alignments mu_eff = 1 - |delta| / sqrt(K)
    kw = dict(d=240, lr=0.1, batch=60, radius=0.35)
    a = escape_distribution([0.2, 0.6], [1, 3], **kw)
    b = escape_distribution([0.6, 0.2], [1, 3], **kw)
    mu_eff = 1.0 - np.hypot(0.8, 0.4) / np.sqrt(2.0)
    c = escape_distribution([mu_eff, mu_eff], [1, 3], **kw)
    np.testing.assert_allclose(a.quantiles, b.quantiles)
    np.testing.assert_allclose(a.quantiles, c.quantiles, rtol=1e-8)
    assert a.config["single_index_mu"] == pytest.approx(mu_eff)


@pytest.mark.parametrize("rank", [1, 3])
def test_unequal_alignments_agree_with_the_two_layer_reduced_engine(rank):
    _check_against_the_engine([0.1, 0.9], rank)


def test_fixed_start_with_unequal_alignments_is_the_first_of_the_directions():
    # direction j starts with overlap m0 on neuron j mod K: its projection on the mismatch
    # direction differs with j, and the law is that of the first direction to escape
    r = escape_distribution([0.2, 0.6], [1, 2], d=240, lr=0.1, batch=60, radius=0.35, m0=0.15)
    assert np.all(np.diff(r.quantiles[1]) > 0) and np.all(r.quantiles[1] < r.quantiles[0])
    steps = np.linspace(5.0, 40.0, 50)
    one, first = r.results[0], r.results[1]
    assert np.all(first.cdf(0, steps) >= one.cdf(0, steps) - 1e-12)
    for lv, q in zip(QUANTILES, first.quantiles[0], strict=True):
        assert first.cdf(0, np.array([q]))[0] == pytest.approx(lv, abs=1e-6)
    # the mean from the survival integral agrees with a Monte Carlo of the quantile function
    u = (np.arange(20000) + 0.5) / 20000
    lo = np.interp(u, QUANTILES, first.quantiles[0])  # coarse: inside the central 90%
    assert abs(first.mean[0] / np.mean(lo) - 1) < 0.02


def test_bad_input():
    with pytest.raises(LoradynError, match="outside"):
        escape_distribution([0.3, 1.5], [1], d=1000, lr=0.1, batch=100)
    for d in (0, -1, 2, 10.5, True):  # the default a0 = 1/sqrt(d) needs a valid d first
        with pytest.raises(LoradynError, match="dimension"):
            escape_distribution([0.3, 0.5], [1], d=d, lr=0.1, batch=100)
    with pytest.raises(LoradynError, match="linear"):
        escape_distribution(0.5, [1], K=2, d=1000, lr=0.1, batch=100, activation="he2-norm")
    with pytest.raises(LoradynError, match="ranks"):
        escape_distribution(0.5, [0], K=2, d=1000, lr=0.1, batch=100)
