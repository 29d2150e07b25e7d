"""Saving, summarizing and plotting simulation results (the engines themselves never draw).

- :func:`save_netcdf` / :func:`load_netcdf`: atomic netCDF round trip of a result dataset
  (defined in :mod:`loradyn.io`, re-exported here);
- :func:`summary_rows`: one row per ``mu`` (escape statistics, theory, final state);
- :func:`plot_run`: :math:`|m|(t)` and the test MSE against ODE time for each ``mu``
  (mean over seeds, thin lines per seed) with the theory exit time marked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ..io import atomic_savefig, load_netcdf, plot_format, require_folder, save_netcdf

__all__ = ["load_netcdf", "plot_run", "save_netcdf", "summary_rows"]


def summary_rows(ds: xr.Dataset) -> list[dict]:
    """One dict per ``mu``: escape statistics over seeds, theory, final ``|m|`` and MSE.

    Keys: ``mu, escaped, seeds, escape_median, escape_mean, exit_step_theory, tau_theory,
    final_abs_m, final_mse, diverged`` (escape statistics over escaped seeds only; ``None``
    when none escaped).
    """
    rows = []
    es = np.asarray(ds["escape_step"].values)
    fm = np.abs(np.asarray(ds["m"].isel(step=-1).values))
    fmse = np.asarray(ds["mse"].isel(step=-1).values)
    div = np.asarray(ds["diverged"].values)
    for i, mu in enumerate(np.asarray(ds["mu"].values)):
        ok = es[i] >= 0
        rows.append(
            {
                "mu": float(mu),
                "escaped": int(ok.sum()),
                "seeds": int(es.shape[1]),
                "escape_median": float(np.median(es[i][ok])) if ok.any() else None,
                "escape_mean": float(np.mean(es[i][ok])) if ok.any() else None,
                "exit_step_theory": float(ds["exit_step_theory"].values[i]),
                "tau_theory": float(ds["tau_theory"].values[i]),
                "final_abs_m": float(np.mean(fm[i])),
                "final_mse": float(np.mean(fmse[i])),
                "diverged": int(div[i].sum()),
            }
        )
    return rows


def plot_run(ds: xr.Dataset, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """PNG of :math:`|m|` and the test MSE against ODE time, one colour per ``mu``.

    Thin lines: single seeds; thick line: mean over seeds; dashed vertical line: the
    theory exit time :math:`\\tau\\log(R\\sqrt d)`. Written atomically; returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = require_folder(path)
    t = np.asarray(ds["time"].values)
    mus = np.asarray(ds["mu"].values)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    try:
        for i, mu in enumerate(mus):
            col = cmap(i / max(1, mus.size - 1))
            am = np.abs(np.asarray(ds["m"].isel(mu=i).values))
            mse = np.asarray(ds["mse"].isel(mu=i).values)
            for j in range(am.shape[0]):
                if am.shape[0] > 1:
                    axes[0].plot(t, am[j], color=col, lw=0.4, alpha=0.5)
                    axes[1].plot(t, mse[j], color=col, lw=0.4, alpha=0.5)
            axes[0].plot(t, am.mean(0), color=col, lw=1.8, label=f"mu={mu:g}")
            axes[1].plot(t, mse.mean(0), color=col, lw=1.8)
            ex = float(ds["exit_time_theory"].values[i])
            if np.isfinite(ex) and ex <= t[-1]:
                for ax in axes:
                    ax.axvline(ex, color=col, ls="--", lw=0.8)
        thr = None
        try:
            import json

            thr = json.loads(ds.attrs.get("config", "{}")).get("threshold")
        except ValueError:
            thr = None
        if thr is not None:
            axes[0].axhline(float(thr), color="grey", lw=0.6, ls=":")
        axes[0].set_xlabel("time t = step * lr")
        axes[0].set_ylabel("|m|")
        axes[0].legend(fontsize=7, ncol=2)
        axes[1].set_xlabel("time t = step * lr")
        axes[1].set_ylabel("test MSE")
        axes[1].set_yscale("log")
        fig.suptitle(title or f"engine={ds.attrs.get('engine', '?')}", fontsize=9)
        for ax in axes:
            ax.grid(True, alpha=0.3)
        fig.tight_layout()
        atomic_savefig(fig, target, format=plot_format(target))
    finally:
        plt.close(fig)
    return target
