r"""Statistical tests of App. K's two statements on simulated two-layer runs.

App. K: "the pretrained weights primarily control the escape from the search phase, while
the LoRA rank mainly shapes the subsequent descent phase and the final attainable loss".
Two questions, each answered from per-seed data of several ranks and pre-training
strengths, with rank tests (no normality assumed) at level ``alpha`` (default 1%):

- :func:`escape_verdict` -- *does the escape depend on the rank, or on the pre-training?*
  Mann-Whitney test between two pre-training settings (escape times pooled over ranks) for
  the pre-training effect; Kruskal-Wallis across ranks at each setting for the rank effect.
  Effect sizes are ratios of medians. ``holds`` when the pre-training effect is significant
  and either no rank effect is detected or it is smaller than the pre-training effect;
  ``fails`` when a rank effect is detected that is at least as large; ``inconclusive``
  when the pre-training effect itself is not significant (the data cannot tell which
  one "primarily" controls the escape).
- :func:`final_loss_verdict` -- *does the rank set the final loss?* For each setting and each
  pair of consecutive ranks, a one-sided Mann-Whitney test that the larger rank ends lower.
  ``holds`` when every such decrease is significant, ``fails`` otherwise.

Seeds that never escaped enter the escape tests as ties above every escaped seed
(censored at the last step); the rank tests need no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

Array = np.ndarray


@dataclass(frozen=True)
class Verdict:
    """A computed verdict with the numbers that led to it."""

    verdict: str  # holds | fails | inconclusive
    measured: str
    criterion: str


def _censor(e: Array, cap: float) -> Array:
    e = np.asarray(e, dtype=float)
    return np.where(e >= 0, e, cap)


def escape_verdict(escapes: dict[str, dict[int, Array]], cap: float,
                   alpha: float = 0.01) -> Verdict:
    """``escapes[setting][rank]``: per-seed escape times (``-1``: never), two settings."""
    settings = list(escapes)
    if len(settings) != 2:
        raise ValueError("escape_verdict needs exactly two pre-training settings")
    pooled = [np.concatenate([_censor(v, cap) for v in escapes[s].values()]) for s in settings]
    p_mu = float(stats.mannwhitneyu(pooled[0], pooled[1], alternative="two-sided").pvalue)
    med = [float(np.median(p)) for p in pooled]
    mu_ratio = max(med) / max(min(med), 1e-300)
    p_rank, rank_ratio = {}, {}
    for s in settings:
        groups = [_censor(v, cap) for v in escapes[s].values()]
        if np.ptp(np.concatenate(groups)) == 0:  # all tied: no rank effect
            p_rank[s] = 1.0
        else:
            p_rank[s] = float(stats.kruskal(*groups).pvalue)
        m = [float(np.median(g)) for g in groups]
        rank_ratio[s] = max(m) / max(min(m), 1e-300)
    rank_sig = any(p < alpha for p in p_rank.values())
    worst = max(rank_ratio.values())
    if p_mu >= alpha:
        verdict = "inconclusive"
    elif not rank_sig or worst < mu_ratio:
        verdict = "holds"
    else:
        verdict = "fails"
    measured = (
        f"pre-training effect: median escape {med[0]:.3g} vs {med[1]:.3g} (ratio "
        f"{mu_ratio:.3g}, Mann-Whitney p = {p_mu:.2g}); rank effect: "
        + "; ".join(f"{s}: ratio of medians over ranks {rank_ratio[s]:.3g}, Kruskal-Wallis "
                    f"p = {p_rank[s]:.2g}" for s in settings)
    )
    criterion = (
        f"pre-training effect significant (p < {alpha:g}) and the rank effect not detected "
        f"(p >= {alpha:g}) or smaller than the pre-training effect (ratio of medians); "
        "inconclusive when the pre-training effect is not significant"
    )
    return Verdict(verdict, measured, criterion)


def final_loss_verdict(losses: dict[str, dict[int, Array]], alpha: float = 0.01) -> Verdict:
    """``losses[setting][rank]``: per-seed final losses; ranks in increasing order."""
    parts, ok = [], True
    for s, by_rank in losses.items():
        ranks = sorted(by_rank)
        ps = []
        for r0, r1 in zip(ranks[:-1], ranks[1:], strict=True):
            a = np.nan_to_num(np.asarray(by_rank[r1], float), nan=np.inf)
            b = np.nan_to_num(np.asarray(by_rank[r0], float), nan=np.inf)
            p = float(stats.mannwhitneyu(a, b, alternative="less").pvalue)
            ps.append(p)
            ok &= p < alpha
        meds = [float(np.median(by_rank[r])) for r in ranks]
        parts.append(f"{s}: median final loss for r = {ranks}: "
                     + "[" + ", ".join(f"{m:.3g}" for m in meds) + "], one-sided p(r+1 < r) = "
                     + "[" + ", ".join(f"{p:.2g}" for p in ps) + "]")
    criterion = (f"for every setting and consecutive ranks, the larger rank ends lower "
                 f"(one-sided Mann-Whitney p < {alpha:g})")
    return Verdict("holds" if ok else "fails", "; ".join(parts), criterion)
