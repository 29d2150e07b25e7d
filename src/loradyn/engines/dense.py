r"""Dense one-pass SGD in dimension ``d`` (theory.md section 4), numpy or torch, float64 or float32.

One step for each trajectory, with a fresh batch :math:`x_1..x_B \sim N(0, I_d)`:

.. math::

    z^*_i = w^*\cdot x_i,\quad z_i = w\cdot x_i,\quad
    \lambda_i = \mu z^*_i\ [+\sqrt{1-\mu^2}\, v\cdot x_i] + u z_i,\quad
    g_i = \partial\ell/\partial\lambda(\lambda_i, z^*_i),

    G = \frac{u}{B}\sum_i g_i x_i,\qquad
    u \leftarrow u - \frac{\eta}{B}\sum_i g_i z_i,

    w \leftarrow \frac{w - \eta P_w G}{|w - \eta P_w G|}\ \text{(spherical)}\quad\text{or}\quad
    \frac{w - \eta G}{|w - \eta G|}\ \text{(renormalized)}.

:math:`w^* = e_1` (and :math:`v = e_2` for misaligned pre-training) unless
``teacher_direction='random'``; :math:`w_0` is uniform on the sphere (or has the
configured overlaps ``m0``/``p0``). The per-step work is one draw of :math:`B\times d`
normals into a preallocated buffer, one batched product :math:`D X^\top` for the
projections (``D`` holds :math:`w^*, (v,) w` as rows; this layout is about 4x faster than
:math:`X D` in float32 with torch) and one :math:`c^\top X` for :math:`G`: no
:math:`d\times d` work and no allocation of the size of the batch.

``config.dtype`` (``float64`` default, ``float32``) is the precision of the samples, the
projections, the activations and the weights ``w``. The scalars ``u``, the sums
:math:`\sum_i g_i z_i` and :math:`|w - \eta P_w G|^2`, and the recorded overlaps are kept in
float64 (the overlaps are float64 dot products of the stored weights). Float32 is exact
enough while a step moves ``w`` by much more than float32's resolution; see
:func:`float32_step` and :func:`check_float32`.

Trajectories are processed in memory groups (at most :data:`MAX_BUFFER_FLOATS` sample
numbers at once); each ``(mu, seed)`` has its own random stream, so grouping does not
change results. The ``torch`` backend draws with one ``torch.Generator`` per trajectory
seeded from the same stream scheme (same law as numpy, not the same numbers). On the CPU
the torch draw fills a numpy array that shares its memory and the step itself is the
numpy code below (numpy's dispatch costs a few microseconds less per small operation than
torch's); on another device (cuda) the whole step runs in torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..config import RunConfig
from ..errors import LoradynError
from ._common import STREAM_DENSE, Labels, Schedule, seed_sequence, tick, trajectory_rngs
from ._layout import EngineOutput, GroupCollector, StepTracker

Array = np.ndarray
#: ``make_draw(X)`` returns a function that refills the sample buffer ``X`` in place.
MakeDraw = Callable[[Array], Callable[[], None]]

#: Largest sample buffer (numbers) held at once; trajectories are grouped to fit.
MAX_BUFFER_FLOATS = 1 << 23

#: float32 rounds each weight to a relative :math:`2^{-24}`. The smallest relative step
#: of ``w`` (:func:`float32_step`) that float32 runs accept: at this size the rounding adds
#: noise of about 2% of the SGD step per coordinate (4e-4 in variance).
FLOAT32_MIN_STEP = 1e-6

#: Run the whole torch step in torch on the CPU too (tests of the device code path).
_TORCH_STEP_ON_CPU = False


def _directions(
    config: RunConfig, rng: np.random.Generator, mis: bool
) -> tuple[Array, Array | None, Array]:
    """``w*``, ``v`` (misaligned) and ``w0`` for one trajectory."""
    d = config.d
    if config.teacher_direction == "random":
        q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
        ws, v = q[:, 0].copy(), q[:, 1].copy()
    else:
        ws = np.zeros(d)
        ws[0] = 1.0
        v = np.zeros(d)
        v[1] = 1.0
    fixed: list[tuple[Array, float]] = []
    if config.m0 is not None:
        fixed.append((ws, float(config.m0)))
    if mis and config.p0 is not None:
        fixed.append((v, float(config.p0)))
    g = rng.standard_normal(d)
    if not fixed:
        w = g / np.linalg.norm(g)
    else:
        for e, _ in fixed:
            g -= (g @ e) * e
        rest = np.sqrt(max(0.0, 1.0 - sum(c * c for _, c in fixed)))
        w = rest * g / np.linalg.norm(g)
        for e, c in fixed:
            w += c * e
    return ws, (v if mis else None), w


def _initial_rows(config: RunConfig, rngs: list[np.random.Generator], mis: bool) -> Array:
    """``D[t] = [w*, (v,) w0]`` as rows, float64, shape ``(n, k, d)`` (``k = 2`` or 3)."""
    k = 3 if mis else 2
    D = np.empty((len(rngs), k, config.d))
    for t, g in enumerate(rngs):
        ws, v, w = _directions(config, g, mis)
        D[t, 0] = ws
        if mis:
            D[t, 1] = v
        D[t, k - 1] = w
    return D


def float32_step(config: RunConfig) -> float:
    r"""Relative size of the first update of ``w``, smallest over ``mu``.

    .. math::

        \rho = \eta\,|u_0|\,\sqrt{(d - 1)\,E[g^2] / B},

    the root-mean-square of :math:`\eta|P_w G|` at the start (the sample noise of
    :math:`G = \frac{u}{B}\sum_i g_i x_i` in the :math:`d - 1` directions orthogonal to
    ``w``), with :math:`E[g^2]` the population value at :math:`(u_0, m_0)` (``m0`` or 0).
    Each coordinate of ``w`` moves by about :math:`\rho` times its size, and float32
    rounds it to a relative :math:`2^{-24} \approx 6\times 10^{-8}`. With the default
    :math:`u_0 = 1/\sqrt d`, :math:`\rho = \eta\sqrt{E[g^2]/B}` does not depend on ``d``.
    Returns ``inf`` when nothing moves at the start (:math:`u_0 = 0` or :math:`E[g^2] = 0`).
    """
    from ..population import population

    mis = config.pretraining == "misaligned"
    m0 = 0.0 if config.m0 is None else float(config.m0)
    p0 = (0.0 if config.p0 is None else float(config.p0)) if mis else None
    h = population(config.problem(config.label), float(config.u0), m0, config.mus, p=p0).h
    h = float(np.min(h))
    rho = config.lr * abs(float(config.u0)) * math.sqrt((config.d - 1) * max(h, 0.0) / config.batch)
    return rho if rho > 0 else math.inf


def check_float32(config: RunConfig) -> None:
    """Refuse a float32 run whose steps float32 cannot resolve (one-line ``LoradynError``).

    The criterion is :func:`float32_step` ``>=`` :data:`FLOAT32_MIN_STEP`: below it the
    rounding of ``w`` is no longer small against the SGD step (below about
    :math:`6\times 10^{-8}` the update is rounded away and ``w`` stops moving).
    """
    rho = float32_step(config)
    if rho < FLOAT32_MIN_STEP:
        raise LoradynError(
            f"dtype float32 cannot resolve this run: a step moves w by a relative {rho:.1e} "
            f"(lr |u0| sqrt(d E[g^2] / batch)), below {FLOAT32_MIN_STEP:g} where float32 "
            "rounding (6e-8) stops being negligible: use dtype float64"
        )


def run_dense(
    config: RunConfig, progress: Callable[[float, str], None] | None = None
) -> EngineOutput:
    """Run the dense engine (numpy or torch backend, float64 or float32) on every ``(mu, seed)``."""
    if config.dtype == "float32":
        check_float32(config)
    mis = config.pretraining == "misaligned"
    rngs = trajectory_rngs(config, STREAM_DENSE)
    n_mu, n_seed = config.mus.size, config.seeds
    n = n_mu * n_seed
    mu_flat = np.repeat(config.mus, n_seed)
    seeds_flat = np.tile(config.seed_list, n_mu)
    group = int(max(1, MAX_BUFFER_FLOATS // (config.batch * config.d)))
    out = GroupCollector(config, mis)
    label = "numpy"
    dev = _torch_device(config) if config.backend == "torch" else None
    for a in range(0, n, group):
        sl = slice(a, min(n, a + group))
        D0 = _initial_rows(config, rngs[sl], mis)
        where = (a, n)
        if dev is None:
            tr, sched = _group_host(config, D0, mu_flat[sl], _numpy_draw(rngs[sl]), progress,
                                    where)
        else:
            gens = _torch_generators(mu_flat[sl], seeds_flat[sl], dev)
            label = f"torch:{dev.type}"
            if dev.type == "cpu" and not _TORCH_STEP_ON_CPU:
                tr, sched = _group_host(config, D0, mu_flat[sl], _torch_cpu_draw(gens),
                                        progress, where)
            else:
                tr, sched = _group_torch(config, D0, mu_flat[sl], gens, dev, progress, where)
        out.add(sl, tr, sched.switch_step)
    return out.output(label)


def _numpy_draw(rngs: list[np.random.Generator]) -> MakeDraw:
    """Refill ``X[t]`` from trajectory ``t``'s PCG64 stream (in ``X``'s dtype)."""

    def make(X: Array) -> Callable[[], None]:
        rows = [X[t] for t in range(len(rngs))]

        def draw() -> None:
            for g, row in zip(rngs, rows, strict=True):
                g.standard_normal(dtype=X.dtype, out=row)

        return draw

    return make


def _torch_cpu_draw(gens: list) -> MakeDraw:
    """Refill ``X[t]`` with ``normal_`` of torch generator ``t``, in place (shared memory)."""

    def make(X: Array) -> Callable[[], None]:
        import torch

        rows = [torch.from_numpy(X[t]) for t in range(len(gens))]

        def draw() -> None:
            for g, row in zip(gens, rows, strict=True):
                row.normal_(generator=g)

        return draw

    return make


def _group_host(config, D0, mu, make_draw, progress, where):
    """One group of trajectories, stepped with numpy (samples drawn by ``make_draw``)."""
    mis = config.pretraining == "misaligned"
    dt = np.dtype(config.dtype)
    n, k, d = D0.shape
    B, eta = config.batch, config.lr
    labels = Labels(config)
    sched = Schedule(config, n)
    tr = StepTracker(config, n, mis)
    fixed = D0[:, : k - 1, :]  # w* (and v) in float64, for the recorded overlaps
    D = D0.astype(dt)  # rows [w*, (v,) w]; the last row is the trainable direction
    W = D[:, k - 1, :]  # a view: updating W updates D
    mu_c = mu.astype(dt)[:, None]
    nu_c = np.sqrt(np.maximum(1.0 - mu * mu, 0.0)).astype(dt)[:, None]
    u = np.full(n, float(config.u0))
    X = np.empty((n, B, d), dtype=dt)
    XT = X.transpose(0, 2, 1)
    proj = np.empty((n, k, B), dtype=dt)
    G = np.empty((n, 1, d), dtype=dt)
    Wn = np.empty((n, d), dtype=dt)
    draw = make_draw(X)
    spherical = config.update == "spherical"

    def overlaps():
        o = np.einsum("njd,nd->nj", fixed, W.astype(np.float64, copy=False))
        return o[:, 0], (o[:, 1] if mis else None)

    m, p = overlaps()
    tr.record(0, u, m, p)
    with np.errstate(all="ignore"):
        for s in range(config.steps):
            draw()
            st2 = sched.update(s, m)
            u = sched.realign(u, m, p, mu)
            np.matmul(D, XT, out=proj)
            zs, z = proj[:, 0], proj[:, k - 1]
            uc = u.astype(dt)[:, None]
            lam = mu_c * zs + uc * z
            if mis:
                lam += nu_c * proj[:, 1]
            gv = np.asarray(labels.g(lam, zs, st2), dtype=dt)
            c = gv * (uc / B)
            np.matmul(c[:, None, :], X, out=G)
            Gv = G[:, 0, :]
            gz = np.einsum("ij,ij->i", gv, z, dtype=np.float64) / B
            if spherical:  # Wn = W - eta (G - (G.w) w)
                Bw = np.einsum("nd,nd->n", Gv, W)
                np.multiply(W, Bw[:, None], out=Wn)
                np.subtract(Gv, Wn, out=Wn)
                Wn *= -eta
                Wn += W
            else:  # Wn = W - eta G
                np.multiply(Gv, -eta, out=Wn)
                Wn += W
            N = np.sqrt(np.einsum("nd,nd->n", Wn, Wn, dtype=np.float64))
            u_new = u - eta * gz
            ok = tr.check(s + 1, [u_new, N, np.where(N > 0, 1.0, np.nan)])
            if ok.all():
                np.divide(Wn, N[:, None], out=W)
            else:
                W[ok] = Wn[ok] / N[ok, None]
            u = np.where(ok, u_new, u)
            m, p = overlaps()
            tr.record(s + 1, u, m, p)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched


def _torch_device(config: RunConfig):
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an optional dependency
        raise LoradynError("backend='torch' needs torch: pip install loradyn[vit]") from exc
    if config.device:
        try:
            return torch.device(config.device)
        except RuntimeError as exc:
            raise LoradynError(f"device {config.device!r} is not valid: use cpu or cuda") from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_generators(mu: Array, seeds: Array, dev) -> list:
    """One ``torch.Generator`` per trajectory, seeded from its ``(seed, mu)`` stream."""
    import torch

    gens = []
    for m_, s_ in zip(mu, seeds, strict=True):
        ss = seed_sequence(STREAM_DENSE + 100, int(s_), float(m_))
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        gens.append(gen)
    return gens


def _group_torch(config, D0, mu, gens, dev, progress, where):
    """One group of trajectories, stepped in torch on ``dev`` (one host sync per step)."""
    import torch

    mis = config.pretraining == "misaligned"
    f64 = torch.float64
    tdt = torch.float32 if config.dtype == "float32" else f64
    n, k, d = D0.shape
    B, eta = config.batch, config.lr
    labels = Labels(config)
    sched = Schedule(config, n)
    tr = StepTracker(config, n, mis)
    fixed = torch.as_tensor(D0[:, : k - 1, :], dtype=f64, device=dev)
    D = torch.as_tensor(D0, device=dev).to(tdt)
    W = D[:, k - 1, :]
    mu64 = torch.as_tensor(mu, dtype=f64, device=dev)
    mu_c = mu64.to(tdt)[:, None]
    nu_c = torch.sqrt(torch.clamp(1.0 - mu64 * mu64, min=0.0)).to(tdt)[:, None]
    u = np.full(n, float(config.u0))
    X = torch.empty((n, B, d), dtype=tdt, device=dev)
    XT = X.transpose(1, 2)
    proj = torch.empty((n, k, B), dtype=tdt, device=dev)
    G = torch.empty((n, 1, d), dtype=tdt, device=dev)
    Wn = torch.empty((n, d), dtype=tdt, device=dev)
    rows = [X[t] for t in range(n)]
    spherical = config.update == "spherical"
    sf, sdf = _torch_activation(labels)

    def overlaps(V):
        return torch.einsum("njd,nd->nj", fixed, V.to(f64))

    o = overlaps(W).cpu().numpy()
    m, p = o[:, 0], (o[:, 1] if mis else None)
    tr.record(0, u, m, p)
    with np.errstate(all="ignore"), torch.no_grad():
        for s in range(config.steps):
            for g, row in zip(gens, rows, strict=True):
                row.normal_(generator=g)
            st2 = sched.update(s, m)
            u = sched.realign(u, m, p, mu)
            torch.bmm(D, XT, out=proj)
            zs, z = proj[:, 0], proj[:, k - 1]
            uc = torch.from_numpy(u).to(device=dev, dtype=tdt)[:, None]
            lam = torch.addcmul(mu_c * zs, uc, z)
            if mis:
                lam.addcmul_(nu_c, proj[:, 1])
            if sf is not None:
                y = _torch_labels(labels, zs, st2, dev)
                dsg = sdf(lam)
                gv = (sf(lam) - y) * dsg if labels.mse else -y * dsg
            else:  # activation without a torch form: evaluate with numpy on the host
                gv = torch.as_tensor(
                    labels.g(lam.cpu().numpy(), zs.cpu().numpy(), st2), device=dev
                ).to(tdt)
            torch.bmm((gv * (uc / B))[:, None, :], X, out=G)
            Gv = G[:, 0, :]
            gz = torch.einsum("ij,ij->i", gv.to(f64), z.to(f64)) / B
            if spherical:  # Wn = W - eta (G - (G.w) w)
                Bw = torch.einsum("nd,nd->n", Gv, W)[:, None]
                torch.addcmul(Gv, W, Bw, value=-1.0, out=Wn)
                Wn.mul_(-eta).add_(W)
            else:  # Wn = W - eta G
                torch.add(W, Gv, alpha=-eta, out=Wn)
            N = torch.sqrt(torch.einsum("nd,nd->n", Wn.to(f64), Wn.to(f64)))
            Wn.div_(N[:, None])
            # one transfer per step: gz, |Wn| and the overlaps of the candidate w = Wn / |Wn|
            host = torch.cat([gz[:, None], N[:, None], overlaps(Wn)], 1).cpu().numpy()
            u_new = u - eta * host[:, 0]
            Nn = host[:, 1]
            ok = tr.check(s + 1, [u_new, Nn, np.where(Nn > 0, 1.0, np.nan)])
            if ok.all():
                W.copy_(Wn)
                o_new = host[:, 2:]
            else:
                okt = torch.as_tensor(ok, device=dev)[:, None]
                W.copy_(torch.where(okt, Wn, W))
                o_new = np.where(ok[:, None], host[:, 2:], np.stack([m, p] if mis else [m], 1))
            u = np.where(ok, u_new, u)
            m, p = o_new[:, 0], (o_new[:, 1] if mis else None)
            tr.record(s + 1, u, m, p)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched


def _torch_poly(coeffs):
    """Evaluate a Hermite series (He_k) on a torch tensor by the three-term recurrence."""

    def f(x):
        import torch

        out = torch.full_like(x, coeffs[0])
        if len(coeffs) == 1:
            return out
        h0, h1 = torch.ones_like(x), x
        out = out + coeffs[1] * h1
        for kk in range(2, len(coeffs)):
            h0, h1 = h1, x * h1 - (kk - 1) * h0
            if coeffs[kk] != 0.0:
                out = out + coeffs[kk] * h1
        return out

    return f


def _torch_fns(act):
    """Torch forms of ``f`` and ``df`` for built-in activations, else ``(None, None)``."""
    import math

    import torch
    from numpy.polynomial import hermite_e as H

    if act.hermite is not None:
        c = list(act.hermite)
        dc = list(H.hermeder(c)) if len(c) > 1 else [0.0]
        return _torch_poly(c), _torch_poly(dc)
    sq = 2.0 / math.sqrt(math.pi)
    table = {
        "erf": (torch.erf, lambda x: sq * torch.exp(-x * x)),
        "tanh": (torch.tanh, lambda x: 1.0 - torch.tanh(x) ** 2),
        "sigmoid": (torch.sigmoid, lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x))),
        "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),
    }
    return table.get(act.name, (None, None))


def _torch_activation(labels: Labels):
    sf, sdf = _torch_fns(labels.student)
    tf, _ = _torch_fns(labels.p1.teacher)
    if sf is None or tf is None:
        return None, None
    labels._torch_teacher = tf  # type: ignore[attr-defined]
    return sf, sdf


def _torch_labels(labels: Labels, zs, stage2, dev):
    import torch

    phi = labels._torch_teacher(zs)  # type: ignore[attr-defined]
    y1 = phi * phi if labels.p1.target.label.name == "square" else phi
    if labels.p2 is None or stage2 is None or not np.any(stage2):
        return y1
    y2 = phi * phi if labels.p2.target.label.name == "square" else phi
    if np.all(stage2):
        return y2
    sel = torch.tensor(stage2, device=dev)[:, None]
    return torch.where(sel, y2, y1)
