"""Table-1 style summary of a run directory: source accuracy of each checkpoint against
downstream accuracy at the reported fine-tuning epochs, mean and std over seeds.

Accuracies are in percent. ``std`` is the sample standard deviation (ddof = 1) over the
seeds, 0 for a single seed. The source accuracy of a seed is that of the checkpoint its
fine-tune started from (with one shared pre-training its std is 0, as in the paper's
CIFAR-10 rows).
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LoradynError


def _mean_std(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def collect(out: str | Path, seeds: tuple[int, ...] | None = None,
            allow_missing: bool = False, *, reuse_other_code: bool = False,
            ) -> tuple[Any, dict[tuple[int, int], Any]]:
    """The stored config and the finished fine-tune datasets keyed by (checkpoint, seed).

    ``seeds=None``: the stored seeds and every seed with a fine-tune result on disk.
    Results come from the run directory's result store
    (:func:`loradyn.vit.rundir.find_finetune`, torch-free): a result made by other
    number-computing code counts as unfinished unless ``reuse_other_code``; a corrupt one
    is set aside and counts as unfinished."""
    from .rundir import find_finetune, load_run_config

    out = Path(out)
    cfg = load_run_config(out)
    if seeds is None:
        # the stored seeds plus those with a finished fine-tune: sweep workers that start
        # together each merge their seed into config.json, and the last write can drop one
        seeds = tuple(sorted(set(cfg.seeds) | finished_seeds(out)))
    res, missing, stale = {}, [], 0
    for c in cfg.pretrain.checkpoints:
        for s in seeds:
            found = find_finetune(out, cfg, c, s, reuse_other_code=reuse_other_code)
            if found.ds is not None:
                res[(c, s)] = found.ds
            else:
                missing.append(f"ckpt {c} seed {s}")
                stale += found.state == "stale"
    if missing and not allow_missing:
        why = (f"; {stale} of them made by other number-computing code: rerun to recompute "
               "them, or pass --reuse-other-code to use them" if stale else "")
        raise LoradynError(
            f"{len(missing)} fine-tune(s) unfinished in {out} ({', '.join(missing[:4])}...)"
            f"{why}; run 'loradyn vit run' or 'vit finetune' first"
        )
    return cfg, res


def finished_seeds(out: str | Path) -> set[int]:
    """Fine-tuning seeds with at least one readable fine-tune result in ``out/results``
    (any code version) or in the older layout ``out/finetune/p<P>_ckpt<EEE>_seed<S>.nc``."""
    from ..io import load_netcdf
    from .rundir import result_store

    seeds: set[int] = set()
    for p in sorted(result_store(out).results_dir.glob("*.nc")):
        try:
            seeds.add(int(load_netcdf(p).attrs["seed"]))
        except Exception:  # noqa: BLE001 - unreadable: find_finetune sets it aside
            continue
    pat = re.compile(r"^p-?\d+_ckpt\d+_seed(-?\d+)\.nc$")
    found = (pat.match(p.name) for p in (Path(out) / "finetune").glob("*.nc"))
    return seeds | {int(m.group(1)) for m in found if m}


def table_rows(out: str | Path, seeds: tuple[int, ...] | None = None,
               allow_missing: bool = False, *,
               reuse_other_code: bool = False) -> list[dict[str, Any]]:
    """One row per checkpoint: task, checkpoint, source acc and fine-tune acc at each
    reported epoch (mean and std over seeds, percent), plus ``n_seeds`` (results as in
    :func:`collect`)."""
    cfg, res = collect(out, seeds, allow_missing, reuse_other_code=reuse_other_code)
    rows = []
    for c in cfg.pretrain.checkpoints:
        dss = [ds for (ck, _), ds in sorted(res.items()) if ck == c]
        if not dss:
            continue
        row: dict[str, Any] = {"task": cfg.task, "checkpoint": c}
        row["source_acc_mean"], row["source_acc_std"] = _mean_std(
            [100 * float(ds.attrs["source_acc"]) for ds in dss])
        for e in cfg.report_epochs:
            m, s = _mean_std([100 * float(ds["test_acc"].sel(epoch=e)) for ds in dss])
            row[f"ft_acc_at_{e}_mean"], row[f"ft_acc_at_{e}_std"] = m, s
        row["n_seeds"] = len(dss)
        rows.append(row)
    return rows


def columns(report_epochs: tuple[int, ...]) -> list[str]:
    cols = ["task", "checkpoint", "source_acc_mean", "source_acc_std"]
    for e in report_epochs:
        cols += [f"ft_acc_at_{e}_mean", f"ft_acc_at_{e}_std"]
    return cols


def write_table(out: str | Path, seeds: tuple[int, ...] | None = None,
                allow_missing: bool = False, *,
                reuse_other_code: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``out/table.csv`` (header ``task,checkpoint,source_acc_mean,source_acc_std,
    ft_acc_at_<E>_mean,ft_acc_at_<E>_std`` per reported epoch E) atomically; results as in
    :func:`collect` (``reuse_other_code``: also those of other code)."""
    from ..io import atomic_write_text
    from .rundir import load_run_config

    out = Path(out)
    cfg = load_run_config(out)
    rows = table_rows(out, seeds, allow_missing, reuse_other_code=reuse_other_code)
    cols = columns(cfg.report_epochs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([r[k] if isinstance(r[k], str | int) else f"{r[k]:.2f}" for k in cols])
    path = out / "table.csv"
    atomic_write_text(path, buf.getvalue(), encoding=None, mkdir=False)
    return path, rows


def table_html(rows: list[dict[str, Any]], report_epochs: tuple[int, ...]) -> str:
    """The rows as an HTML table (``mean ± std``), like the paper's Table 1."""
    head = ["Task", "Source ckpt.", "Source acc."] + [f"FT ep. {e}" for e in report_epochs]
    out = ["<table class=\"vit-table\">", "<thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        cells = [html.escape(str(r["task"])), f"{r['checkpoint']:03d}",
                 _pm(r["source_acc_mean"], r["source_acc_std"])]
        cells += [_pm(r[f"ft_acc_at_{e}_mean"], r[f"ft_acc_at_{e}_std"]) for e in report_epochs]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pm(m: float, s: float) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.2f} &plusmn; {s:.2f}"


def decoupling(rows: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
    """The claim of Table 1: is the checkpoint with the best source accuracy (the latest
    one, if source accuracy rises) not the one with the best downstream accuracy at
    ``epoch``? Returns the checkpoints, their accuracies and the verdict flags."""
    latest = max(rows, key=lambda r: r["checkpoint"])
    key = f"ft_acc_at_{epoch}_mean"
    # on ties the latest checkpoint is preferred: a tie for the best downstream accuracy
    # means the latest checkpoint *is* among the best, so the claim does not hold
    best_src = max(rows, key=lambda r: (r["source_acc_mean"], r is latest))
    best_ft = max(rows, key=lambda r: (r[key], r is latest))
    has_best_source = latest["source_acc_mean"] >= best_src["source_acc_mean"]
    not_best_downstream = best_ft[key] > latest[key]
    return {
        "latest": latest["checkpoint"],
        "best_source": best_src["checkpoint"],
        "best_downstream": best_ft["checkpoint"],
        "latest_has_best_source": has_best_source,
        "latest_not_best_downstream": not_best_downstream,
        "gap": best_ft[key] - latest[key],
        "holds": has_best_source and not_best_downstream,
    }
