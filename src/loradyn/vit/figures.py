"""Fig. 10-12 style figure of a run: source curves on top, downstream curves below.

Top row: source test accuracy and loss along pre-training (mean +- std over pre-training
seeds), with the checkpoints marked. Bottom row: downstream test accuracy and loss along
LoRA fine-tuning, one curve per checkpoint, mean +- std (shaded) over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_savefig


def plot_run(out: str | Path, seeds: tuple[int, ...] | None = None,
             path: str | Path | None = None, allow_missing: bool = False, *,
             reuse_other_code: bool = False) -> Path:
    """Draw the figure of run directory ``out`` into ``path`` (default ``out/figure.png``);
    the fine-tunes as in :func:`loradyn.vit.table.collect`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import load_netcdf as _load_nc
    from .rundir import pretrain_dir
    from .table import collect

    out = Path(out)
    cfg, res = collect(out, seeds, allow_missing, reuse_other_code=reuse_other_code)
    seeds = tuple(sorted({s for _, s in res})) if seeds is None else tuple(seeds)
    hists = []
    for p in sorted({cfg.pretrain_seed_for(s) for s in seeds}):
        h = pretrain_dir(out, p) / "history.nc"
        if h.exists():
            hists.append(_load_nc(h))
    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(cfg.pretrain.checkpoints)))
    if hists:
        ep = hists[0]["epoch"].values
        for j, (var, lab) in enumerate((("test_acc", "source test accuracy (%)"),
                                         ("test_loss", "source test loss"))):
            v = np.stack([h[var].values for h in hists]) * (100 if var == "test_acc" else 1)
            m, s = v.mean(0), v.std(0)
            ax[0, j].plot(ep, m, color="k")
            ax[0, j].fill_between(ep, m - s, m + s, color="k", alpha=0.2)
            for c, col in zip(cfg.pretrain.checkpoints, colors, strict=True):
                ax[0, j].axvline(c, color=col, ls="--", lw=1)
            ax[0, j].set_xlabel("pre-training epoch")
            ax[0, j].set_ylabel(lab)
        ax[0, 0].set_title(f"source: {cfg.source.label}")
    for c, col in zip(cfg.pretrain.checkpoints, colors, strict=True):
        dss = [ds for (ck, _), ds in sorted(res.items()) if ck == c]
        if not dss:
            continue
        ep = dss[0]["epoch"].values
        for j, var in enumerate(("test_acc", "test_loss")):
            v = np.stack([d[var].values for d in dss]) * (100 if var == "test_acc" else 1)
            m, s = v.mean(0), v.std(0)
            ax[1, j].plot(ep, m, color=col, label=f"ckpt {c:03d}")
            ax[1, j].fill_between(ep, m - s, m + s, color=col, alpha=0.2)
    ax[1, 0].set_ylabel("downstream test accuracy (%)")
    ax[1, 1].set_ylabel("downstream test loss")
    for j in range(2):
        ax[1, j].set_xlabel("LoRA fine-tuning epoch")
    ax[1, 0].set_title(f"target: {cfg.target.label}")
    ax[1, 0].legend(fontsize=8)
    lora = cfg.finetune.lora
    fig.suptitle(f"{cfg.task} ({cfg.scale} scale, {len(seeds)} seed(s), LoRA rank {lora.rank} "
                 f"on {'+'.join(lora.target_modules)}, {cfg.finetune.per_class}/class)")
    fig.tight_layout()
    path = Path(path) if path is not None else out / "figure.png"
    atomic_savefig(fig, path, dpi=110)  # format from the suffix (.png, .pdf)
    plt.close(fig)
    return path
