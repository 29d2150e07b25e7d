r"""Statistical tests behind the simulation-based claims.

Every simulation claim turns its data into one of the four verdicts of
:data:`loradyn.reproduce.registry.VERDICTS` through a stated test, and puts the test's
statistic and p-value (or interval) into the claim's ``measured`` column:

- :func:`interval_verdict`: a confidence interval against an acceptance range
  (inside: ``holds``; disjoint: ``fails``; overlapping its edge: ``inconclusive``);
- :func:`bootstrap_ci`, :func:`bootstrap_ratio_ci`: percentile-bootstrap intervals of a
  statistic (the median by default) of one sample, or of the ratio of two independent
  samples' statistics;
- :func:`trend_test`: Kendall's :math:`\tau_b` between a setting (``mu``) and a per-seed
  outcome (an escape step, censored at the budget), one-sided in the stated direction;
- :func:`proportion_test`: an exact binomial test of a proportion of seeds against
  :math:`p_0` (a sign test for :math:`p_0 = 1/2`), with its Clopper-Pearson interval;
- :func:`ks_test`: the two-sample Kolmogorov-Smirnov test;
- :func:`escape_samples`: escape steps per ``mu`` with diverged trajectories removed and
  counted (a diverged trajectory is never a trajectory that "did not escape").

Every random draw is seeded, so a verdict is bit-reproducible on one machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

ALPHA = 0.05
LEVEL = 0.95
N_BOOT = 4000

Array = np.ndarray


@dataclass(frozen=True)
class Outcome:
    """The verdict of one test and its one-line description for the ``measured`` column."""

    verdict: str
    text: str


def combine(outcomes: Sequence[str]) -> str:
    """The verdict of a claim made of several tests that must all hold.

    ``fails`` if any part fails, else ``inconclusive`` if any part is inconclusive (or not
    tested), else ``holds``. An empty list is ``not-tested``.
    """
    if not outcomes:
        return "not-tested"
    if "fails" in outcomes:
        return "fails"
    if any(v != "holds" for v in outcomes):
        return "inconclusive"
    return "holds"


def interval_verdict(lo: float, hi: float, lower: float = -math.inf,
                     upper: float = math.inf) -> str:
    """Compare a confidence interval ``[lo, hi]`` with the acceptance range ``[lower, upper]``.

    ``holds`` when the interval lies inside the range, ``fails`` when it lies entirely
    outside it, ``inconclusive`` when it straddles an edge (the data cannot tell). A NaN
    bound is ``inconclusive``.
    """
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo >= lower and hi <= upper:
        return "holds"
    if hi < lower or lo > upper:
        return "fails"
    return "inconclusive"


def bootstrap_ci(x: Sequence[float], stat: Callable[[Array], float] = np.median,
                 level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
                 ) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of ``stat`` of a sample: ``(estimate, lo, hi)``.

    With fewer than two values the sampling spread is unknown: the interval is
    ``(-inf, inf)`` (so any criterion is ``inconclusive``). Infinite values (censored
    observations) are kept: a median can be ``inf``.
    """
    a = np.asarray(x, dtype=float)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return math.nan, math.nan, math.nan
    est = float(stat(a))
    if a.size < 2:
        return est, -math.inf, math.inf
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = np.apply_along_axis(stat, 1, a[idx]) if stat is not np.median else np.median(
        a[idx], axis=1)
    q = (1 - level) / 2
    # inverted-CDF quantiles: no interpolation between an inf (censored) and a number
    return (est, float(np.quantile(boots, q, method="inverted_cdf")),
            float(np.quantile(boots, 1 - q, method="inverted_cdf")))


def bootstrap_ratio_ci(num: Sequence[float], den: Sequence[float],
                       stat: Callable[[Array], float] = np.median, level: float = LEVEL,
                       n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of ``stat(num) / stat(den)`` for two independent
    samples, each resampled on its own: ``(estimate, lo, hi)``.

    Fewer than two values in either sample give ``(-inf, inf)``.
    """
    a = np.asarray(num, dtype=float)
    b = np.asarray(den, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        est = float(stat(a) / stat(b))
        if a.size < 2 or b.size < 2:
            return est, -math.inf, math.inf
        rng = np.random.default_rng(seed)
        ia = rng.integers(0, a.size, size=(n_boot, a.size))
        ib = rng.integers(0, b.size, size=(n_boot, b.size))
        r = np.median(a[ia], axis=1) / np.median(b[ib], axis=1) if stat is np.median else \
            np.apply_along_axis(stat, 1, a[ia]) / np.apply_along_axis(stat, 1, b[ib])
    if math.isnan(est):  # both statistics inf (nothing learned in either sample)
        return est, math.nan, math.nan
    r = r[~np.isnan(r)]
    if r.size == 0:
        return est, math.nan, math.nan
    q = (1 - level) / 2
    return (est, float(np.quantile(r, q, method="inverted_cdf")),
            float(np.quantile(r, 1 - q, method="inverted_cdf")))


def trend_test(x: Sequence[float], y: Sequence[float], direction: str = "increasing",
               alpha: float = ALPHA) -> Outcome:
    r"""Kendall's :math:`\tau_b` trend test of ``y`` against ``x``, one-sided.

    ``holds`` when the trend in ``direction`` is significant at ``alpha``, ``fails`` when
    the opposite trend is, ``inconclusive`` otherwise (including when every ``y`` ties,
    e.g. nothing escaped within the budget). ``y`` may hold ``inf`` (censored at the
    budget): only ranks matter.
    """
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"direction must be increasing or decreasing, got {direction!r}")
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    keep = ~np.isnan(ya) & ~np.isnan(xa)
    xa, ya = xa[keep], ya[keep]
    finite = ya[np.isfinite(ya)]
    big = (np.max(np.abs(finite)) if finite.size else 1.0) * 2 + 1
    ya = np.where(np.isposinf(ya), big, np.where(np.isneginf(ya), -big, ya))
    n = xa.size
    if n < 3 or np.ptp(ya) == 0 or np.ptp(xa) == 0:
        return Outcome("inconclusive", f"Kendall trend test impossible (n={n}, all outcomes "
                       "tied)" if n >= 3 else f"Kendall trend test impossible (n={n})")
    res = sst.kendalltau(xa, ya)
    t = float(res.statistic)
    p_two = float(res.pvalue)
    p_up = p_two / 2 if t > 0 else 1 - p_two / 2
    p_down = p_two / 2 if t < 0 else 1 - p_two / 2
    p_dir, p_opp = (p_up, p_down) if direction == "increasing" else (p_down, p_up)
    verdict = "holds" if p_dir < alpha else ("fails" if p_opp < alpha else "inconclusive")
    return Outcome(verdict, f"Kendall tau_b={t:+.2f}, one-sided p={p_dir:.2g} ({direction}, "
                            f"n={n})")


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    ci = sst.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def proportion_test(k: int, n: int, p0: float = 0.5, alpha: float = ALPHA) -> Outcome:
    """Exact binomial test of ``k`` successes in ``n`` against the proportion ``p0``.

    ``holds`` when the proportion is significantly above ``p0`` (one-sided p < alpha),
    ``fails`` when it is significantly below, ``inconclusive`` otherwise. For ``p0 = 1/2``
    on the signs of paired differences this is the sign test.
    """
    if n == 0:
        return Outcome("inconclusive", "no trajectory to count")
    p_up = float(sst.binomtest(int(k), int(n), p0, alternative="greater").pvalue)
    p_down = float(sst.binomtest(int(k), int(n), p0, alternative="less").pvalue)
    lo, hi = clopper_pearson(k, n)
    verdict = "holds" if p_up < alpha else ("fails" if p_down < alpha else "inconclusive")
    return Outcome(verdict, f"{k}/{n}, 95% CI [{lo:.2f}, {hi:.2f}]; binomial test vs "
                            f"p0={p0:g}: p(>)={p_up:.2g}, p(<)={p_down:.2g}")


def mannwhitney_test(larger: Sequence[float], smaller: Sequence[float],
                     alpha: float = ALPHA) -> Outcome:
    """One-sided Mann-Whitney U test that ``larger`` is stochastically larger than
    ``smaller`` (``inf`` allowed: censored at the budget). ``holds`` when significant,
    ``fails`` when the opposite is, ``inconclusive`` otherwise."""
    a = np.asarray(larger, dtype=float)
    b = np.asarray(smaller, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return Outcome("inconclusive", "Mann-Whitney test impossible (an empty sample)")
    both = np.concatenate([a, b])
    fin = both[np.isfinite(both)]
    big = (np.max(np.abs(fin)) if fin.size else 1.0) * 2 + 1
    a, b = np.where(np.isinf(a), big, a), np.where(np.isinf(b), big, b)
    if np.ptp(np.concatenate([a, b])) == 0:
        return Outcome("inconclusive", f"Mann-Whitney test impossible (all {a.size + b.size} "
                                       "values tied)")
    method = "exact" if a.size + b.size <= 16 and np.unique(np.concatenate([a, b])).size == \
        a.size + b.size else "asymptotic"
    p_up = float(sst.mannwhitneyu(a, b, alternative="greater", method=method).pvalue)
    p_down = float(sst.mannwhitneyu(a, b, alternative="less", method=method).pvalue)
    verdict = "holds" if p_up < alpha else ("fails" if p_down < alpha else "inconclusive")
    return Outcome(verdict, f"Mann-Whitney one-sided p={p_up:.2g} (n={a.size} vs {b.size})")


def ks_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (``inf`` censored values kept)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan
    fin = np.concatenate([x, y])
    fin = fin[np.isfinite(fin)]
    big = (np.max(np.abs(fin)) if fin.size else 1.0) * 2 + 1
    res = sst.ks_2samp(np.where(np.isinf(x), big, x), np.where(np.isinf(y), big, y))
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class EscapeSamples:
    """Escape steps of a simulation per ``mu``, diverged trajectories removed.

    ``steps[i]`` holds the escape steps of the trajectories at ``mu[i]`` that did not
    diverge, ``inf`` where a trajectory did not escape within the budget. ``diverged[i]``
    counts the removed trajectories.
    """

    mu: Array
    steps: list[Array]
    diverged: Array
    budget: int

    @property
    def n_diverged(self) -> int:
        return int(np.sum(self.diverged))

    def note(self) -> str:
        """``; 2 diverged trajectories excluded (mu=0.9: 2)`` or an empty string."""
        if not self.n_diverged:
            return ""
        per = ", ".join(f"mu={m:g}: {int(k)}" for m, k in zip(self.mu, self.diverged,
                                                               strict=True) if k)
        return (f"; {self.n_diverged} diverged trajectories excluded, not counted as "
                f"'did not escape' ({per})")

    def pooled(self) -> tuple[Array, Array]:
        """``(mu per trajectory, escape step per trajectory)`` for a trend test."""
        xs = [np.full(s.size, m) for m, s in zip(self.mu, self.steps, strict=True)]
        return (np.concatenate(xs) if xs else np.array([]),
                np.concatenate(self.steps) if self.steps else np.array([]))

    def medians(self) -> Array:
        return np.array([float(np.median(s)) if s.size else math.nan for s in self.steps])


def escape_samples(ds) -> EscapeSamples:
    """:class:`EscapeSamples` of an engine dataset (``escape_step``, ``diverged``)."""
    es = np.asarray(ds["escape_step"].values, dtype=float)
    if "diverged" in ds:
        div = np.asarray(ds["diverged"].values).astype(bool)
    else:
        div = np.zeros(es.shape, dtype=bool)
    # an escape recorded before the trajectory diverged is a real escape
    div = div & (es < 0)
    es = np.where(es < 0, np.inf, es)
    budget = int(ds["step"].values[-1]) if "step" in ds.coords else -1
    steps = [row[~d] for row, d in zip(es, div, strict=True)]
    return EscapeSamples(np.asarray(ds["mu"].values, dtype=float), steps,
                         div.sum(axis=1), budget)


def fmt_ci(est: float, lo: float, hi: float, digits: int = 3) -> str:
    """``1.23 [95% CI 1.1, 1.4]``."""
    def f(v: float) -> str:
        return "inf" if np.isposinf(v) else ("-inf" if np.isneginf(v) else f"{v:.{digits}g}")

    return f"{f(est)} [95% CI {f(lo)}, {f(hi)}]"
