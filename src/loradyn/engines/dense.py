r"""Dense one-pass SGD in dimension ``d`` (theory.md section 4), numpy or torch.

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
normals into a preallocated buffer, one batched matrix product for the projections
:math:`X[w^*, (v,) w]` and one for :math:`G = c^\top X`: no :math:`d\times d` work.

Trajectories are processed in memory groups (at most :data:`MAX_BUFFER_FLOATS` floats of
samples at once); each ``(mu, seed)`` has its own random stream, so grouping does not
change results. The ``torch`` backend runs the same algorithm on ``config.device`` (cuda
when available, else cpu) in float64, with one ``torch.Generator`` per trajectory seeded
from the same stream; its numbers differ from numpy's (same law, not the same draws).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import RunConfig
from ._common import STREAM_DENSE, Labels, Schedule, seed_sequence, tick, trajectory_rngs
from ._layout import EngineOutput, GroupCollector, StepTracker

Array = np.ndarray

#: Largest sample buffer (floats) held at once; trajectories are grouped to fit.
MAX_BUFFER_FLOATS = 1 << 23


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


def run_dense(
    config: RunConfig, progress: Callable[[float, str], None] | None = None
) -> EngineOutput:
    """Run the dense engine (numpy or torch backend) on every ``(mu, seed)``."""
    mis = config.pretraining == "misaligned"
    rngs = trajectory_rngs(config, STREAM_DENSE)
    n_mu, n_seed = config.mus.size, config.seeds
    n = n_mu * n_seed
    mu_flat = np.repeat(config.mus, n_seed)
    seeds_flat = np.tile(config.seed_list, n_mu)
    group = int(max(1, MAX_BUFFER_FLOATS // (config.batch * config.d)))
    out = GroupCollector(config, mis)
    backend = config.backend
    label = "numpy"
    for a in range(0, n, group):
        sl = slice(a, min(n, a + group))
        if backend == "torch":
            tr, sched, label = _group_torch(
                config, rngs[sl], mu_flat[sl], seeds_flat[sl], progress, (a, n)
            )
        else:
            tr, sched = _group_numpy(config, rngs[sl], mu_flat[sl], progress, (a, n))
        out.add(sl, tr, sched.switch_step)
    return out.output(label)


def _group_numpy(config, rngs, mu, progress, where):
    mis = config.pretraining == "misaligned"
    n, B, d, eta = len(rngs), config.batch, config.d, config.lr
    labels = Labels(config)
    sched = Schedule(config, n)
    tr = StepTracker(config, n, mis)
    k = 3 if mis else 2
    # D[t] = [w*, (v,) w] as columns; the last column is the trainable direction.
    D = np.empty((n, d, k))
    for t, g in enumerate(rngs):
        ws, v, w = _directions(config, g, mis)
        D[t, :, 0] = ws
        if mis:
            D[t, :, 1] = v
        D[t, :, k - 1] = w
    W = D[:, :, k - 1]  # a view: updating W updates D
    u = np.full(n, float(config.u0))
    nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))

    def overlaps():
        m = np.einsum("nd,nd->n", D[:, :, 0], W)
        p = np.einsum("nd,nd->n", D[:, :, 1], W) if mis else None
        return m, p

    m, p = overlaps()
    tr.record(0, u, m, p)
    X = np.empty((n, B, d))
    proj = np.empty((n, B, k))
    G = np.empty((n, 1, d))
    with np.errstate(all="ignore"):
        for s in range(config.steps):
            for t, g in enumerate(rngs):
                g.standard_normal(out=X[t])
            st2 = sched.update(s, m)
            u = sched.realign(u, m, p, mu)
            np.matmul(X, D, out=proj)
            zs, z = proj[:, :, 0], proj[:, :, k - 1]
            lam = mu[:, None] * zs + u[:, None] * z
            if mis:
                lam += nu[:, None] * proj[:, :, 1]
            gv = labels.g(lam, zs, st2)
            c = (u / B)[:, None] * gv
            np.matmul(c[:, None, :], X, out=G)
            Gv = G[:, 0, :]
            gz = np.einsum("ij,ij->i", gv, z) / B
            if config.update == "spherical":
                Bw = np.einsum("nd,nd->n", Gv, W)
                Wn = W - eta * (Gv - Bw[:, None] * W)
            else:
                Wn = W - eta * Gv
            N = np.sqrt(np.einsum("nd,nd->n", Wn, Wn))
            u_new = u - eta * gz
            ok = tr.check(s + 1, [u_new, N, np.where(N > 0, 1.0, np.nan)])
            W[ok] = Wn[ok] / N[ok, None]
            u = np.where(ok, u_new, u)
            m, p = overlaps()
            tr.record(s + 1, u, m, p)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched


def _torch_device(config: RunConfig):
    import torch

    if config.device:
        try:
            return torch.device(config.device)
        except RuntimeError as exc:
            from ..errors import LoradynError

            raise LoradynError(f"device {config.device!r} is not valid: use cpu or cuda") from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _group_torch(config, rngs, mu, seeds, progress, where):
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an optional dependency
        from ..errors import LoradynError

        raise LoradynError("backend='torch' needs torch: pip install loradyn[vit]") from exc
    dev = _torch_device(config)
    mis = config.pretraining == "misaligned"
    n, B, d, eta = len(rngs), config.batch, config.d, config.lr
    k = 3 if mis else 2
    labels = Labels(config)
    sched = Schedule(config, n)
    tr = StepTracker(config, n, mis)
    Dn = np.empty((n, d, k))
    for t, g in enumerate(rngs):
        ws, v, w = _directions(config, g, mis)
        Dn[t, :, 0] = ws
        if mis:
            Dn[t, :, 1] = v
        Dn[t, :, k - 1] = w
    gens = []
    for t in range(n):
        ss = seed_sequence(STREAM_DENSE + 100, int(seeds[t]), float(mu[t]))
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        gens.append(gen)
    f64 = torch.float64
    D = torch.tensor(Dn, dtype=f64, device=dev)
    mu_t = torch.tensor(mu, dtype=f64, device=dev)
    nu_t = torch.sqrt(torch.clamp(1.0 - mu_t * mu_t, min=0.0))
    u = np.full(n, float(config.u0))
    X = torch.empty((n, B, d), dtype=f64, device=dev)

    def overlaps():
        W = D[:, :, k - 1]
        m = (D[:, :, 0] * W).sum(1).cpu().numpy()
        p = (D[:, :, 1] * W).sum(1).cpu().numpy() if mis else None
        return m, p

    m, p = overlaps()
    tr.record(0, u, m, p)
    sf, sdf = _torch_activation(labels)
    with np.errstate(all="ignore"), torch.no_grad():
        for s in range(config.steps):
            for t in range(n):
                torch.randn((B, d), generator=gens[t], dtype=f64, device=dev, out=X[t])
            st2 = sched.update(s, m)
            u = sched.realign(u, m, p, mu)
            proj = torch.matmul(X, D)
            zs, z = proj[:, :, 0], proj[:, :, k - 1]
            ut = torch.tensor(u, dtype=f64, device=dev)
            lam = mu_t[:, None] * zs + ut[:, None] * z
            if mis:
                lam = lam + nu_t[:, None] * proj[:, :, 1]
            if sf is not None:
                y = _torch_labels(labels, zs, st2, dev)
                ds = sdf(lam)
                gv = (sf(lam) - y) * ds if labels.mse else -y * ds
            else:  # activation without a torch form: evaluate with numpy on the host
                gv = torch.tensor(
                    labels.g(lam.cpu().numpy(), zs.cpu().numpy(), st2), dtype=f64, device=dev
                )
            c = (ut / B)[:, None] * gv
            Gv = torch.matmul(c[:, None, :], X)[:, 0, :]
            gz = (gv * z).sum(1) / B
            W = D[:, :, k - 1]
            if config.update == "spherical":
                Bw = (Gv * W).sum(1)
                Wn = W - eta * (Gv - Bw[:, None] * W)
            else:
                Wn = W - eta * Gv
            N = torch.sqrt((Wn * Wn).sum(1))
            u_new = u - eta * gz.cpu().numpy()
            Nn = N.cpu().numpy()
            ok = tr.check(s + 1, [u_new, Nn, np.where(Nn > 0, 1.0, np.nan)])
            okt = torch.tensor(ok, device=dev)
            D[:, :, k - 1] = torch.where(okt[:, None], Wn / N[:, None], W)
            u = np.where(ok, u_new, u)
            m, p = overlaps()
            tr.record(s + 1, u, m, p)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched, f"torch:{dev.type}"


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
