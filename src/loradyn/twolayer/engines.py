r"""Engines for the two-layer LoRA model: ``dense``, ``reduced`` and ``ode``, one interface.

:func:`run` simulates one :class:`~loradyn.twolayer.model.TwoLayerConfig` and returns an
:class:`xarray.Dataset`; :func:`simulate` runs several ranks and stacks them on a ``rank``
dimension (the ``lora`` dimensions are padded with NaN up to the largest rank).

One SGD step (dense and reduced, batch of ``B`` fresh samples, loss averaged over the
batch). With :math:`\lambda_{ik} = \mu_k z^*_{ik} + \sum_j A_{kj}\zeta_{ij}`,
:math:`z^*_{ik} = w^*_k\cdot x_i`, :math:`\zeta_{ij} = v_j\cdot x_i`, residual
:math:`\rho_i = \hat y_i - y_i` and :math:`e_{ik} = \nu\rho_i\sigma'(\lambda_{ik})`:

.. math::

    A \leftarrow A - \frac{\eta}{B} e^\top\zeta,\qquad
    g_j = \frac1B\sum_i c_{ij} x_i,\quad c = eA,\qquad
    v_j \leftarrow \frac{v_j - \eta(g_j - \kappa (g_j\cdot v_j) v_j)}{|\cdot|}

(``kappa = 1`` spherical, ``0`` renormalized), all with the old parameters.

``reduced``: the law of the trajectory of ``(A, M, C)`` is that of the dense SGD, drawn
without any ``d``-dimensional vector (theory.md section 7; derivation in docs/twolayer.md).
In an orthonormal frame of :math:`\mathrm{span}\{w^*_k, v_j\}` (``n = K + r`` vectors: the
:math:`w^*_k`, then a Cholesky factor ``R`` of :math:`C - MM^\top` for the orthogonal parts of
the :math:`v_j`) the ``B`` samples have i.i.d. :math:`N(0, I_n)` coordinates :math:`\xi_i`,
:math:`V` has coordinates :math:`[M, R]`, and the frame part of :math:`g_j` is
:math:`\frac1B\sum_i c_{ij}\xi_i`. The parts of the :math:`g_j` orthogonal to the frame are
:math:`\frac1B c^\top X^\perp` with :math:`X^\perp` a ``B x (d-n)`` standard Gaussian matrix
independent of :math:`\xi`, so their ``r x r`` Gram matrix is
Wishart\ :sub:`r`\ :math:`(d - n, c^\top c/B^2)`, drawn exactly as :math:`F T T^\top F^\top`
(``F F^T = c^T c / B^2``, ``T`` Bartlett). The new ``M``, ``C`` follow from the frame
coordinates and that Gram; cost :math:`O(B n r + r^3)` per step, independent of ``d``.

``ode``: RK4 integration of :func:`loradyn.twolayer.population.flow` (gradient flow of the
closed-form loss plus the finite-step term :math:`\propto \eta d/B` when
``cfg.noise_term``), one step of SGD = time ``lr``; each seed starts from an exact draw of the
initial state (so the ODE with ``m0=None`` has a random start per seed).

Escape: the first step at which :math:`\max_j |M_{j\cdot}|_2 \ge` ``threshold``; ``-1`` if
never. Trajectories that overflow are stopped and recorded as NaN (``diverged``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import xarray as xr

from ..activations import get_activation
from ..errors import DivergenceError, LoradynError
from .model import (
    ENGINES,
    State,
    TwoLayerConfig,
    effective_mu,
    initial_A,
    initial_state,
    psd_factor,
    wishart,
)
from .moments import target_fn
from .population import flow, loss, loss_method, noise_matrix

Array = np.ndarray
Progress = Callable[[float, str], None]
_BLOWUP = 1e8
_MAX_RK4 = 10_000_000  # ODE substeps beyond which a run would take hours


def _raise_diverged(cfg: TwoLayerConfig) -> None:
    raise DivergenceError(
        f"every trajectory diverged (lr = {cfg.lr}, d = {cfg.d}, batch = {cfg.batch}):"
        " lower lr or raise batch"
    )


def _rng(cfg: TwoLayerConfig, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, cfg.rank, 20260611])


def record_steps(cfg: TwoLayerConfig) -> Array:
    """Recorded steps: ``0, record_every, 2 record_every, ...`` and the last step."""
    steps = np.arange(0, cfg.steps + 1, cfg.record_every)
    if steps[-1] != cfg.steps:
        steps = np.append(steps, cfg.steps)
    return steps


def overlap(cfg: TwoLayerConfig, M: Array) -> Array:
    r"""The escape statistic: :math:`\max_j |M_{j\cdot}|_2` (LoRA: the projection of a
    direction on the teacher span) or :math:`\max_{jk}|M_{jk}|` (``from_scratch``: some row
    against some teacher direction)."""
    if cfg.from_scratch:
        return np.abs(M).max(axis=(-2, -1))
    return np.sqrt(np.sum(M**2, axis=-1)).max(axis=-1)


def _drive(
    cfg: TwoLayerConfig, state: State, advance: Callable[[State], State], stop_on_escape: bool
) -> dict[str, Array]:
    """Advance a batch of trajectories (leading axis ``S``), recording and detecting escape."""
    S = state.A.shape[0]
    rec = record_steps(cfg)
    out = {
        "A": np.full((S, rec.size) + state.A.shape[1:], np.nan),
        "M": np.full((S, rec.size) + state.M.shape[1:], np.nan),
        "C": np.full((S, rec.size) + state.C.shape[1:], np.nan),
    }
    esc = np.full(S, -1, dtype=np.int64)
    alive = np.ones(S, dtype=bool)
    ri = 0

    def check(step: int, st: State) -> None:
        nonlocal ri
        ov = overlap(cfg, st.M)
        bad = ~(np.isfinite(st.A).all(axis=(-2, -1)) & np.isfinite(st.C).all(axis=(-2, -1))
                & (np.abs(st.A).max(axis=(-2, -1)) < _BLOWUP))
        alive[bad] = False
        newly = (esc < 0) & (ov >= cfg.threshold) & alive
        esc[newly] = step
        if ri < rec.size and rec[ri] == step:
            for k in ("A", "M", "C"):
                out[k][alive, ri] = getattr(st, k)[alive]
            ri += 1

    check(0, state)
    for step in range(1, cfg.steps + 1):
        state = advance(state)
        check(step, state)
        if not alive.any() or (stop_on_escape and np.all((esc >= 0) | ~alive)):
            break
    out["escape_step"] = esc
    out["diverged"] = ~alive
    out["stopped_at"] = np.array(step)
    return out


_SQ2 = math.sqrt(2.0)
_FAST = {
    "linear": (lambda x: x, lambda x: np.ones_like(x)),
    "he2-norm": (lambda x: (x * x - 1.0) / _SQ2, lambda x: _SQ2 * x),
}


def _fns(name: str):
    if name in _FAST:
        return _FAST[name]
    act = get_activation(name)
    return act.f, act.df


def _grads(cfg: TwoLayerConfig, zs: Array, zeta: Array, A: Array) -> tuple[Array, Array]:
    """``(gA, c)`` from the batch projections ``zs`` (B x K) and ``zeta`` (B x r)."""
    (sf, sdf) = _fns(cfg.activation)
    pf = _fns(cfg.teacher)[0] if cfg.label == "identity" else target_fn(cfg.teacher, cfg.label).f
    lam = zs * effective_mu(cfg) + zeta @ A.T
    res = cfg.nu * (sf(lam).sum(axis=1) - pf(zs).sum(axis=1))
    e = cfg.nu * res[:, None] * sdf(lam)
    gA = e.T @ zeta / cfg.batch
    return gA, e @ A


def _reduced_traj(cfg: TwoLayerConfig, seed: int, stop_on_escape: bool) -> dict[str, Array]:
    rng = _rng(cfg, seed)
    st0 = initial_state(cfg, rng)
    K, r, B, lr = cfg.K, cfg.rank, cfg.batch, cfg.lr
    n = K + r
    kappa = 1.0 if cfg.update == "spherical" else 0.0
    a_lr = 0.0 if cfg.from_scratch else lr  # from scratch: A = I is frozen

    def advance(st: State) -> State:
        A, M, C = st.A[0], st.M[0], st.C[0]
        R = psd_factor(C - M @ M.T)
        Vc = np.concatenate([M, R], axis=1)  # r x n frame coordinates of the v_j
        xi = rng.standard_normal((B, n))
        zs, zeta = xi[:, :K], xi @ Vc.T
        gA, c = _grads(cfg, zs, zeta, A)
        Gs = c.T @ xi / B  # frame part of the r column gradients
        Gam = wishart(rng, cfg.d - n, c.T @ c / (B * B))  # Gram of the orthogonal parts
        s = np.sum(Gs * Vc, axis=1)
        U = Vc - lr * (Gs - kappa * s[:, None] * Vc)
        UU = U @ U.T + lr * lr * Gam
        nrm = np.sqrt(np.diag(UU))
        Mn = U[:, :K] / nrm[:, None]
        Cn = UU / np.outer(nrm, nrm)
        Cn[np.arange(r), np.arange(r)] = 1.0
        return State((A - a_lr * gA)[None], Mn[None], Cn[None])

    return _drive(cfg, State(st0.A[None], st0.M[None], st0.C[None]), advance, stop_on_escape)


def _dense_traj(cfg: TwoLayerConfig, seed: int, stop_on_escape: bool) -> dict[str, Array]:
    rng = _rng(cfg, seed)
    K, r, d, B, lr = cfg.K, cfg.rank, cfg.d, cfg.batch, cfg.lr
    Ws = np.linalg.qr(rng.standard_normal((d, K)))[0].T  # K x d orthonormal teacher
    if cfg.m0 is None:
        V = rng.standard_normal((r, d))
    else:
        M0 = cfg.initial_overlaps()
        O = rng.standard_normal((r, d))
        O -= (O @ Ws.T) @ Ws
        O /= np.linalg.norm(O, axis=1, keepdims=True)
        V = M0 @ Ws + np.sqrt(1.0 - np.sum(M0**2, axis=1))[:, None] * O
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    A0 = initial_A(cfg)
    kappa = 1.0 if cfg.update == "spherical" else 0.0
    a_lr = 0.0 if cfg.from_scratch else lr
    hold = {"V": V}

    def order(A: Array, V: Array) -> State:
        return State(A[None], (V @ Ws.T)[None], (V @ V.T)[None])

    def advance(st: State) -> State:
        A, V = st.A[0], hold["V"]
        x = rng.standard_normal((B, d))
        zs, zeta = x @ Ws.T, x @ V.T
        gA, c = _grads(cfg, zs, zeta, A)
        G = c.T @ x / B
        s = np.sum(G * V, axis=1)
        U = V - lr * (G - kappa * s[:, None] * V)
        V = U / np.linalg.norm(U, axis=1, keepdims=True)
        hold["V"] = V
        return order(A - a_lr * gA, V)

    return _drive(cfg, order(A0, V), advance, stop_on_escape)


def _ode_batch(cfg: TwoLayerConfig, seeds: list[int], stop_on_escape: bool) -> dict[str, Array]:
    sts = [initial_state(cfg, _rng(cfg, s)) for s in seeds]
    st = State(*(np.stack([getattr(x, k) for x in sts]) for k in ("A", "M", "C")))
    # RK4 sub-steps of at most 0.1 in units of the flow's rate: the drift scales with nu^2
    # (nu = 1 unless a readout normalization is set), so a 1/K readout allows K^2 larger steps
    sub = max(1, math.ceil(cfg.lr * min(1.0, cfg.nu**2) / 0.1 - 1e-9))
    h = cfg.lr / sub

    mu = effective_mu(cfg)
    noisy = cfg.noise_term and cfg.lr * cfg.d / cfg.batch > 0

    def blown(y: tuple[Array, Array, Array]) -> bool:
        """Every trajectory non-finite or beyond the blow-up bound (the SGD criterion)."""
        A, C = y[0], y[2]
        ok = (np.isfinite(A).all(axis=(-2, -1)) & np.isfinite(C).all(axis=(-2, -1))
              & (np.abs(A).max(axis=(-2, -1)) < _BLOWUP))
        return not ok.any()

    def advance(s: State, n: int = sub) -> State:
        y = (s.A, s.M, s.C)
        for _ in range(n):
            # the finite-step term's H once per sub-step (it is O(lr) and varies slowly; for
            # relu and quadrature activations it is the costly part)
            H = (noise_matrix(mu, *y, activation=cfg.activation, nu=cfg.nu,
                              teacher=cfg.teacher, label=cfg.label) if noisy else None)

            def f(z: tuple[Array, Array, Array], H: Array | None = H):
                return flow(cfg, *z, H=H)

            k1 = f(y)
            k2 = f(tuple(a + 0.5 * h * b for a, b in zip(y, k1, strict=True)))
            k3 = f(tuple(a + 0.5 * h * b for a, b in zip(y, k2, strict=True)))
            k4 = f(tuple(a + h * b for a, b in zip(y, k3, strict=True)))
            y = tuple(a + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
                      for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4, strict=True))
            if blown(y):  # stop at once: the remaining substeps would only carry inf/NaN
                break
        return State(*y)

    with np.errstate(over="ignore", invalid="ignore"):
        if cfg.steps * sub > _MAX_RK4:
            # a horizon of more than _MAX_RK4 RK4 steps: diverged if a short probe blows
            # up (as SGD does at such a learning rate), otherwise refused up front
            if blown(tuple(getattr(advance(st, min(sub, 100)), k) for k in ("A", "M", "C"))):
                _raise_diverged(cfg)
            raise LoradynError(
                f"the ode engine would take {cfg.steps * sub:.3g} RK4 steps of at most 0.1 "
                f"(steps * lr = {cfg.steps * cfg.lr:.3g}): lower --lr or --steps"
            )
        return _drive(cfg, st, advance, stop_on_escape)


def run(
    cfg: TwoLayerConfig, engine: str = "reduced", *, stop_on_escape: bool = False,
    progress: Progress | None = None,
) -> xr.Dataset:
    """Simulate ``cfg.seeds`` trajectories of one configuration with ``engine``.

    Returns
    -------
    xarray.Dataset
        Dims ``seed, step, neuron, lora, lora2``; variables ``loss`` (population loss of the
        recorded state: closed form, or quadrature for other activations), ``A``, ``M``,
        ``C``, ``overlap`` (:math:`\\max_j|M_{j\\cdot}|`), ``escape_step``, ``diverged``;
        coordinate ``time = step * lr``; ``attrs['config']`` is the configuration JSON.
        With ``stop_on_escape`` the run ends once every seed escaped (later records NaN).
    """
    if engine not in ENGINES:
        raise LoradynError(f"engine = {engine!r} is unknown: choose one of {', '.join(ENGINES)}")
    seeds = list(range(cfg.seed0, cfg.seed0 + cfg.seeds))
    if engine == "ode":
        res = _ode_batch(cfg, seeds, stop_on_escape)
    else:
        traj = _dense_traj if engine == "dense" else _reduced_traj
        parts = []
        for i, s in enumerate(seeds):
            with np.errstate(over="ignore", invalid="ignore"):
                parts.append(traj(cfg, s, stop_on_escape))
            if progress is not None:
                progress((i + 1) / len(seeds), f"{engine} seed {s}")
        res = {k: np.concatenate([p[k] for p in parts]) for k in ("A", "M", "C", "escape_step",
                                                               "diverged")}
    if np.all(res["diverged"]):
        _raise_diverged(cfg)
    st = State(res["A"], res["M"], res["C"])
    with np.errstate(invalid="ignore"):
        L = loss(cfg, st)
    steps = record_steps(cfg)
    ov = overlap(cfg, res["M"])
    ds = xr.Dataset(
        {
            "loss": (("seed", "step"), L),
            "A": (("seed", "step", "neuron", "lora"), res["A"]),
            "M": (("seed", "step", "lora", "neuron"), res["M"]),
            "C": (("seed", "step", "lora", "lora2"), res["C"]),
            "overlap": (("seed", "step"), ov),
            "escape_step": (("seed",), res["escape_step"]),
            "diverged": (("seed",), res["diverged"].astype(bool)),
        },
        coords={
            "seed": seeds, "step": steps, "time": ("step", steps * cfg.lr),
            "neuron": np.arange(cfg.K), "lora": np.arange(cfg.rank),
            "lora2": np.arange(cfg.rank),
        },
        attrs={
            "config": cfg.replace(engine=engine, ranks=None, stop_on_escape=stop_on_escape
                                  ).to_json(), "engine": engine,
            "model": "twolayer-from-scratch" if cfg.from_scratch else "twolayer",
            "loss_method": loss_method(cfg),
            "norm_used": cfg.norm_used,
        },
    )
    ds["loss"].attrs["long_name"] = "population loss"
    ds["escape_step"].attrs["long_name"] = "first step with max_j |M_j| >= threshold (-1: never)"
    return ds


def simulate(
    cfg: TwoLayerConfig, ranks: list[int] | None = None, engine: str | None = None, *,
    stop_on_escape: bool | None = None, progress: Progress | None = None,
) -> xr.Dataset:
    """Run :func:`run` for each rank of ``cfg.ranks``, stacked on a ``rank`` dimension.

    ``ranks``, ``engine`` and ``stop_on_escape``, when given, override the config's; the
    result's ``attrs["config"]`` is the configuration actually run, ranks and engine
    included, so ``TwoLayerConfig.from_json(ds.attrs["config"])`` rebuilds it.
    """
    if stop_on_escape is not None:
        cfg = cfg.replace(stop_on_escape=stop_on_escape)
    stop_on_escape = cfg.stop_on_escape
    if ranks is not None:
        ranks = list(ranks)
        if not ranks:
            raise LoradynError("rank list is empty: give at least one rank")
        cfg = cfg.replace(ranks=ranks)
    if engine is not None:
        cfg = cfg.replace(engine=engine)
    ranks = list(cfg.ranks)
    engine = cfg.engine
    if cfg.from_scratch:
        ranks = [cfg.K]  # no LoRA: the K rows are trained, one run
        cfg = cfg.replace(ranks=ranks)
    rmax = max(ranks)
    out = []
    for i, r in enumerate(ranks):
        c = cfg.replace(rank=r, ranks=None)

        def prog(f: float, msg: str, i: int = i) -> None:
            if progress is not None:
                progress((i + f) / len(ranks), f"rank {ranks[i]}: {msg}")

        ds = run(c, engine, stop_on_escape=stop_on_escape, progress=prog)
        ds = ds.reindex(lora=np.arange(rmax), lora2=np.arange(rmax))
        out.append(ds.assign_coords(rank=r).expand_dims("rank"))
        if progress is not None and engine == "ode":
            progress((i + 1) / len(ranks), f"rank {r}")
    res = xr.concat(out, dim="rank", combine_attrs="override")
    res.attrs["config"] = cfg.to_json()
    return res


def save(ds: xr.Dataset, path) -> None:
    """Write ``ds`` to netCDF atomically (temp file, then ``os.replace``), creating its folder."""
    from pathlib import Path

    from ..io import save_netcdf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_netcdf(ds, path)


def summary(ds: xr.Dataset) -> list[dict[str, float]]:
    """One row per rank of a :func:`simulate` result: escape statistics and final loss.

    Keys: ``rank``, ``escaped`` (fraction of seeds), ``escape_step_mean``,
    ``escape_step_std`` (over escaped seeds), ``loss_initial``, ``loss_final`` (seed means).
    """
    if "rank" not in ds.dims:
        ds = ds.expand_dims(rank=[int(ds.sizes["lora"])])
    rows = []
    for r in ds["rank"].values:
        sub = ds.sel(rank=r)
        esc = sub.escape_step.values
        ok = esc >= 0
        L = sub.loss.values
        last = np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan
                         for row in L])
        rows.append({
            "rank": int(r),
            "escaped": float(ok.mean()),
            "escape_step_mean": float(esc[ok].mean()) if ok.any() else float("nan"),
            "escape_step_std": float(esc[ok].std()) if ok.sum() > 1 else float("nan"),
            "loss_initial": float(np.nanmean(L[:, 0])),
            "loss_final": float(np.nanmean(last)),
        })
    return rows


def plot_loss(ds: xr.Dataset, path) -> None:
    """Write a PNG of the seed-mean loss against time, one curve per rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "rank" not in ds.dims:
        ds = ds.expand_dims(rank=[int(ds.sizes["lora"])])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for r in ds["rank"].values:
        L = ds.loss.sel(rank=r)
        ax.plot(ds.time.values, L.mean("seed").values, label=f"r = {int(r)}")
    ax.set_yscale("log")
    ax.set_xlabel("time (step x lr)")
    ax.set_ylabel("population loss")
    ax.legend()
    fig.tight_layout()
    from ..io import atomic_savefig

    atomic_savefig(fig, path)
    plt.close(fig)
