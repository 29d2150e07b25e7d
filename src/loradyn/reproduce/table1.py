"""Table 1 analog: source accuracy of each pre-training checkpoint against downstream LoRA
accuracy at fixed fine-tuning epochs, from the offline ``digits-shifted`` preset.

The paper's rows (EMNIST -> FashionMNIST, CIFAR-10 -> SVHN) need the datasets and a GPU:
``loradyn vit run --preset emnist-fashion --scale paper`` produces them with the same
code. The claim row J1 is evaluated on the digits run made here.
"""

from __future__ import annotations

import math

from ..io import atomic_write_text
from ._vit import run_preset
from .paper import statement
from .registry import Claim, FigureContext, FigureOutput, register

# fig12 runs first and makes the run this table reads (alone, table1 costs what fig12 does)
# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"test": 1.0, "quick": 0.2, "paper": 0.2}

STATEMENT = ("ViT LoRA: the latest checkpoint has the best source accuracy but not the best "
             "downstream accuracy")


@register("table1", "ViT LoRA transfer table (Table 1 analog, digits -> shifted digits)",
          requires=("torch", "timm", "peft", "sklearn"))
def make(ctx: FigureContext) -> FigureOutput:
    from ..vit.table import decoupling, table_html

    cfg, res = run_preset(ctx, "digits-shifted")
    csv_path = atomic_write_text(ctx.data_dir / "table1.csv", res.table.read_text())
    e = max(cfg.report_epochs)
    d = decoupling(res.rows, e)
    by_ck = {r["checkpoint"]: r for r in res.rows}
    lat, best = by_ck[d["latest"]], by_ck[d["best_downstream"]]
    verdict, test = j1_verdict(lat, best, e, len(cfg.seeds), cfg.matched_pretraining,
                               d["latest_has_best_source"])
    measured = (
        f"latest ckpt {d['latest']}: source {lat['source_acc_mean']:.1f}%, FT ep. {e} "
        f"{lat[f'ft_acc_at_{e}_mean']:.1f} +- {lat[f'ft_acc_at_{e}_std']:.1f}%; best downstream "
        f"ckpt {d['best_downstream']}: {best[f'ft_acc_at_{e}_mean']:.1f} +- "
        f"{best[f'ft_acc_at_{e}_std']:.1f}% (source {best['source_acc_mean']:.1f}%); {test}; "
        f"{len(cfg.seeds)} seeds, digits -> shifted digits, {cfg.scale} scale"
    )
    claim = Claim(
        id="J1",
        section="Sec. 3.3 / Table 1 / App. J",
        statement=statement("J1", STATEMENT),
        measured=measured,
        expected="latest ckpt best in source acc. and an earlier ckpt better downstream by more "
                 "than 2 standard errors of the gap over independent pre-trainings (seeds); "
                 "a smaller gap, or seeds sharing one pre-training: inconclusive",
        verdict=verdict,
    )
    ctx.progress(1.0, "done")
    caption = (
        f"Table 1 analog on digits -> shifted digits ({cfg.scale} scale): accuracy (%) of the "
        f"source checkpoints and of LoRA fine-tuning at epochs "
        f"{', '.join(str(x) for x in cfg.report_epochs)}, mean +- std over seeds "
        f"{', '.join(str(s) for s in cfg.seeds)}"
        + (" (one shared pre-training: source std 0)." if not cfg.matched_pretraining else ".")
    )
    return FigureOutput(caption=caption, files=[], data=[csv_path], claims=[claim],
                        kind="table", html=table_html(res.rows, cfg.report_epochs))


def j1_verdict(latest: dict, best: dict, epoch: int, n_seeds: int, independent: bool,
               latest_has_best_source: bool) -> tuple[str, str]:
    """J1's verdict from the downstream gap and its standard error.

    The gap (best downstream minus latest checkpoint, mean over seeds) must exceed two
    standard errors, ``sqrt(s_best^2 + s_latest^2) / sqrt(n)``, over independent
    pre-trainings: ``holds``. The latest checkpoint best downstream by more than two
    standard errors over every other checkpoint, or not best at the source: ``fails``.
    Anything else, or seeds that share one pre-training (their spread says nothing about
    the pre-training's noise): ``inconclusive``.
    """
    key, sd = f"ft_acc_at_{epoch}_mean", f"ft_acc_at_{epoch}_std"
    gap = best[key] - latest[key]
    se = math.sqrt(best[sd] ** 2 + latest[sd] ** 2) / math.sqrt(max(n_seeds, 1))
    text = f"gap {gap:.2f} points, 2 s.e. = {2 * se:.2f} over {n_seeds} seeds"
    if not latest_has_best_source:
        return "fails", text + "; the latest checkpoint is not the best at the source"
    if not independent:
        return "inconclusive", text + ("; the seeds share one pre-training, so the standard "
                                       "error over pre-trainings is unknown")
    if n_seeds < 2:
        return "inconclusive", text + "; one seed: no standard error"
    if gap > 2 * se:
        return "holds", text
    if best is latest:
        return "inconclusive", text + "; the latest checkpoint is best downstream"
    return "inconclusive", text + "; the gap is within 2 standard errors"
