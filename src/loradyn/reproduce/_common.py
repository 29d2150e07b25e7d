"""Helpers shared by the figure modules: saving figures and data, claims, styles.

A figure module asks the library for numbers and draws them; this module only handles
files (atomic writes), matplotlib styling and the construction of :class:`Claim` rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from ..io import atomic_savefig, atomic_write, save_netcdf  # noqa: E402
from .registry import Claim, FigureContext  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
ESCAPE_RADIUS = 0.5


def setup_style() -> None:
    """A small, legible matplotlib style shared by every figure."""
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 110,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 7.5,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "lines.linewidth": 1.4,
        }
    )


def save_figure(fig: plt.Figure, ctx: FigureContext, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` under ``ctx.figures_dir`` (atomically); close it."""
    out = []
    for ext in ("png", "pdf"):
        path = ctx.figures_dir / f"{name}.{ext}"
        out.append(atomic_savefig(fig, path, format=ext, bbox_inches="tight"))
    plt.close(fig)
    return out


def save_dataset(ds: xr.Dataset, ctx: FigureContext, name: str) -> Path:
    """Write ``ds`` to ``data/name.nc`` atomically (:func:`loradyn.io.save_netcdf`: dict
    attrs as JSON, booleans native)."""
    return save_netcdf(ds, ctx.data_dir / f"{name}.nc", mkdir=True)


def save_csv(rows: Sequence[dict], ctx: FigureContext, name: str) -> Path:
    """Write a list of dicts (same keys) to ``data/name.csv`` atomically."""
    path = ctx.data_dir / f"{name}.csv"
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        keys = list(rows[0].keys()) if rows else []
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def claim(
    id: str, section: str, statement: str, measured: str, expected: str,
    ok: bool | str | None,
) -> Claim:
    """A claims-table row.

    ``ok`` is a verdict of :data:`~loradyn.reproduce.registry.VERDICTS` (the outcome of a
    stated test, see :mod:`loradyn.reproduce.stats`) or, for an exact computation, a bool
    (``True``: holds, ``False``: fails); ``None`` gives ``not-tested``. ``statement`` is the
    claim in our notation; the row's statement column quotes the paper's words before it
    (:func:`loradyn.reproduce.paper.statement`).
    """
    from .paper import statement as quote

    if ok is None:
        verdict = "not-tested"
    elif isinstance(ok, str):
        verdict = ok
    else:
        verdict = "holds" if ok else "fails"
    return Claim(id, section, quote(id, statement), measured, expected, verdict)


def fmt(x: float, digits: int = 3) -> str:
    """A compact number: ``inf``, ``1.23e+04`` or ``0.123``."""
    x = float(x)
    if math.isinf(x):
        return "inf"
    if math.isnan(x):
        return "nan"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def fmt_list(xs: Iterable[float], digits: int = 3) -> str:
    """``[a, b, c]`` with :func:`fmt`."""
    return "[" + ", ".join(fmt(x, digits) for x in xs) + "]"


def is_monotone(values: Sequence[float], increasing: bool = True, rtol: float = 0.0) -> bool:
    """Whether ``values`` is (non-strictly, up to ``rtol``) monotone."""
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        d = np.diff(v)
        d = np.where(np.isnan(d) & (v[1:] == v[:-1]), 0.0, d)  # inf followed by inf
        tol = np.zeros_like(d) if rtol == 0 else np.nan_to_num(rtol * np.abs(v[:-1]))
        return bool(np.all(d >= -tol)) if increasing else bool(np.all(d <= tol))


def log_factor(d: int, radius: float = ESCAPE_RADIUS) -> float:
    r""":math:`\log(R\sqrt d)`, the factor between :math:`\tau` and the exit time."""
    return 0.5 * math.log(d) + math.log(radius)


def pick(scale: str, **by_scale):
    """The setting for ``scale`` (``test`` falls back to ``quick``)."""
    if scale in by_scale:
        return by_scale[scale]
    if scale == "test" and "quick" in by_scale:
        return by_scale["quick"]
    return by_scale["paper"]


# ---------------------------------------------------------------- simulations

_SIM_CACHE: dict[str, xr.Dataset] = {}


def simulate(ctx: FigureContext, span: tuple[float, float] = (0.0, 1.0), **config) -> xr.Dataset:
    """Run :func:`loradyn.engines.simulate` for ``RunConfig(**config)`` on ``ctx.engine``.

    The seed base is ``ctx.seed`` (added to ``seed0``); progress is mapped onto the
    fraction interval ``span`` of the figure's bar. Identical configurations are computed
    once per process.
    """
    from ..config import RunConfig
    from ..store import code_hash

    config = dict(config)
    config["seed0"] = int(config.get("seed0", 0)) + int(ctx.seed)
    config.setdefault("engine", ctx.engine)
    # the exact test MSE of every recorded point dominates the cost: ~200 points suffice
    config.setdefault("record_every", max(1, int(config.get("steps", 10000)) // 200))
    cfg = RunConfig(**config)
    key = cfg.key()
    store = cache_store(ctx)
    state, reason = store.state(key)
    if key in _SIM_CACHE and _SIM_CACHE[key].attrs.get("code_hash") == code_hash():
        if state != "done":  # made for another --out in this process: keep it here too
            store.write(key, _SIM_CACHE[key])
        ctx.progress(span[1], "cached simulation")
        return _SIM_CACHE[key]
    if state == "done":
        ds = store.read(key)
        _SIM_CACHE[key] = ds
        ctx.progress(span[1], "simulation from the run's cache")
        return ds
    if state == "corrupt":
        store.quarantine(key, reason)
    lo, hi = span

    def cb(fraction: float, message: str = "") -> None:
        ctx.progress(lo + (hi - lo) * float(fraction), f"simulating {cfg.teacher} {message}")

    ds = run_task(ctx, "simulate", cfg.to_dict(), cfg.engine, key, cb)
    _SIM_CACHE[key] = ds
    return ds


def simulate_twolayer(ctx: FigureContext, cfg, span: tuple[float, float] = (0.0, 1.0)
                      ) -> xr.Dataset:  # noqa: ANN001 - a TwoLayerConfig
    """:func:`loradyn.twolayer.simulate` of ``cfg`` (ranks, engine and ``stop_on_escape``
    inside it) as a task of the run's store: computed once, kept, shared like
    :func:`simulate`; progress is mapped onto ``span`` of the figure's bar."""
    key = cfg.key()
    if key in _SIM_CACHE and _SIM_CACHE[key].attrs.get("code_hash") == _code_hash():
        ctx.progress(span[1], "cached simulation")
        return _SIM_CACHE[key]
    store = cache_store(ctx)
    state, reason = store.state(key)
    if state == "done":
        ds = _SIM_CACHE[key] = store.read(key)
        return ds
    if state == "corrupt":
        store.quarantine(key, reason)
    lo, hi = span

    def cb(fraction: float, message: str = "") -> None:
        ctx.progress(lo + (hi - lo) * float(fraction), message)

    params = cfg.to_dict()
    ds = _SIM_CACHE[key] = run_task(ctx, "twolayer", params, cfg.engine, key, cb)
    return ds


def _code_hash() -> str:
    from ..store import code_hash

    return code_hash()


def run_task(ctx: FigureContext, kind: str, params: dict, engine: str, key: str,
             progress=None) -> xr.Dataset:  # noqa: ANN001 - a progress callback
    """Compute one task of the store and write it: on ``ctx.submit`` (a Dask client's
    future, see :func:`loradyn.reproduce.runner.reproduce`) when set, else here."""
    import warnings

    from ..sweep.kinds import get_kind

    run = get_kind(kind).run
    if ctx.offline:
        from ..errors import LoradynError

        raise LoradynError(f"simulation {key} ({kind}) is not in {cache_store(ctx).root}: "
                           "--from-data rebuilds only what a finished reproduction stored")
    if ctx.submit is not None:
        ds = ctx.submit(kind, params, engine, key)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ds = run(params, engine, progress) if progress is not None else run(params, engine)
        store = cache_store(ctx)
        ds = store.stamp(ds, key)
        store.write(key, ds)
    return ds


def cache_store(ctx: FigureContext):  # noqa: ANN201 - ResultStore, imported lazily
    """The run's result store, ``OUT/data`` (a :class:`loradyn.store.ResultStore`; the
    figures' own data files sit beside its ``results/``; an output made before the store
    moved there keeps ``OUT/cache``, :func:`~loradyn.reproduce.registry.store_dir`).

    Each simulation is written atomically once it finishes, so a reproduce run that is
    killed and started again with the same ``--out`` reuses every finished simulation.
    Each result records the code that made it (:func:`loradyn.store.code_hash`): after a
    change to the number-computing code it is recomputed, unless the run reuses results
    of other code (``--reuse-other-code``).
    """
    from ..store import ResultStore

    return ResultStore(ctx.store_root, reuse_other_code=ctx.reuse_other_code).ensure()


def sim_cache_path(ctx: FigureContext, key: str) -> Path:
    """Where a finished simulation of this run is kept: ``OUT/data/results/<key>.nc``."""
    return cache_store(ctx).result_path(key)


def escape_tau(
    ds: xr.Dataset, paper_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Simulated :math:`\tau` per ``mu``: ``escape_time / log(R sqrt d)`` (times ``paper_scale``).

    Returns the median over the seeds that escaped, the 25% and 75% quantiles (NaN where
    no seed escaped), each of shape ``(mu,)``.
    """
    from ..config import RunConfig

    cfg = RunConfig.from_json(ds.attrs["config"])
    lf = log_factor(cfg.d, cfg.threshold)
    et = np.asarray(ds["escape_time"].values, dtype=float) / lf * paper_scale
    med = np.full(et.shape[0], np.nan)
    q1 = med.copy()
    q3 = med.copy()
    for i, row in enumerate(et):
        ok = row[np.isfinite(row)]
        if ok.size:
            med[i], q1[i], q3[i] = np.median(ok), np.quantile(ok, 0.25), np.quantile(ok, 0.75)
    return med, q1, q3


def config_text(ds: xr.Dataset) -> str:
    """``d=..., lr=..., batch=..., steps=..., seeds=..., engine=...`` of a simulation."""
    from ..config import RunConfig

    c = RunConfig.from_json(ds.attrs["config"])
    return (f"d={c.d}, lr={fmt(c.lr)}, batch={c.batch}, steps={c.steps}, seeds={c.seeds}, "
            f"engine={c.engine}, {c.update} update, escape threshold |m|>={c.threshold:g}")


def plot_median(ax, ds: xr.Dataset, var: str, mu: float, color: str, label: str | None = None,
                absolute: bool = False, logy: bool = False, ls: str = "-", band: bool = True):
    """Median over seeds of ``ds[var]`` at ``mu`` versus step (log x), with a min-max band."""
    steps = ds["step"].values[1:]
    v = np.asarray(ds[var].sel(mu=mu).values, dtype=float)[:, 1:]
    if absolute:
        v = np.abs(v)
    v = np.where(np.isfinite(v), v, np.nan)
    med = np.nanmedian(v, axis=0)
    ax.plot(steps, med, color=color, label=label, ls=ls)
    if band and v.shape[0] > 1:
        ax.fill_between(steps, np.nanmin(v, 0), np.nanmax(v, 0), color=color, alpha=0.15, lw=0)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")


def first_below(ds: xr.Dataset, fraction: float = 0.1) -> np.ndarray:
    """Per ``mu``: first recorded step where the median test MSE is below ``fraction`` of its
    initial value (``inf`` if never)."""
    mse = np.nanmedian(np.asarray(ds["mse"].values, dtype=float), axis=1)
    steps = ds["step"].values
    out = []
    for row in mse:
        hit = np.nonzero(row < fraction * row[0])[0]
        out.append(float(steps[hit[0]]) if hit.size else float("inf"))
    return np.asarray(out)


def first_below_each(ds: xr.Dataset, fraction: float = 0.1) -> np.ndarray:
    """Per ``(mu, seed)``: first recorded step where that trajectory's test MSE is below
    ``fraction`` of its initial value (``inf`` if never); ``NaN`` for a diverged trajectory
    (to be excluded and counted, never read as "never learned")."""
    mse = np.asarray(ds["mse"].values, dtype=float)
    steps = np.asarray(ds["step"].values, dtype=float)
    hit = mse < fraction * mse[..., :1]
    first = np.where(hit.any(axis=-1), steps[np.argmax(hit, axis=-1)], np.inf)
    if "diverged" in ds:
        first = np.where(np.asarray(ds["diverged"].values).astype(bool), np.nan, first)
    return first


def median_escape(ds: xr.Dataset) -> np.ndarray:
    """Median escape step per ``mu`` (``inf`` when most seeds did not escape)."""
    es = np.asarray(ds["escape_step"].values, dtype=float)
    es[es < 0] = np.inf
    return np.median(es, axis=1)


def color(k: int, n: int) -> str:
    """The ``k``-th of ``n`` line colours: the fixed palette, or viridis for many lines."""
    if n <= len(COLORS):
        return COLORS[k]
    import matplotlib.colors as mcolors

    return mcolors.to_hex(plt.get_cmap("viridis")(k / max(n - 1, 1) * 0.92))
