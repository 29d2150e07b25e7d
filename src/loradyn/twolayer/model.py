r"""The two-layer LoRA model of App. K: configuration, state and exact initial laws.

Model (theory.md section 10). Data :math:`x \sim N(0, I_d)`. Teacher with ``K`` orthonormal
neurons :math:`w^*_k`,

.. math::

    y = \nu \sum_{k=1}^K \phi(w^*_k\cdot x),

with the normalization :math:`\nu \in \{1, 1/K, 1/\sqrt K\}` (``norm='none' | '1/K' |
'1/sqrt(K)'``). Student neuron ``k``:

.. math::

    w_k = \mu_k w^*_k + \sum_{j=1}^r A_{kj} v_j,\qquad
    \hat y = \nu \sum_k \sigma(w_k\cdot x),

with a shared rank-``r`` update: ``A`` is ``K x r`` (trainable), the ``r`` directions
:math:`v_j` live on the unit sphere (trainable). The pre-trained part is *exactly
aligned*: :math:`w_k^{(0)} = \mu_k w^*_k`, as in App. K (no misaligned component).

Order parameters: :math:`M_{jk} = v_j\cdot w^*_k` (``r x K``), :math:`C_{jl} = v_j\cdot v_l`
(``r x r``, unit diagonal) and ``A`` (``K x r``). With :math:`D = \mathrm{diag}(\mu)`,
the student/teacher pre-activations are jointly Gaussian with

.. math::

    P = W W^{*\top} = D + A M,\qquad
    Q = W W^\top = D^2 + D M^\top A^\top + A M D + A C A^\top,

and teacher Gram :math:`I_K`. Every population quantity depends on ``(A, M, C)`` only.

Initialization (exact law at dimension ``d``):

- ``m0=None``: each :math:`v_j` uniform on the sphere, independently. Its projections on the
  teacher span are :math:`n_j/|n_j|` with :math:`n_j \sim N(0, I_d)`: the ``K`` teacher
  coordinates are i.i.d. :math:`N(0,1)` and the Gram of the ``r`` orthogonal parts is
  Wishart\ :sub:`r`\ ``(d-K, I)``, drawn exactly by Bartlett's decomposition.
- ``m0`` a number or an ``r x K`` array: :math:`M_0` is fixed (a number ``m`` gives
  :math:`M_{0,jk} = m` when ``k = j mod K`` and 0 otherwise, i.e. direction ``j`` starts
  toward teacher neuron ``j mod K``) and the rest of each :math:`v_j` is uniform on the
  sphere orthogonal to the teacher span: :math:`C_0 = M_0 M_0^\top + (s s^\top)\circ R_0`,
  :math:`s_j = \sqrt{1 - |M_{0,j}|^2}`, :math:`R_0` the correlation matrix of a
  Wishart\ :sub:`r`\ ``(d-K, I)`` draw.
- ``a0`` (default :math:`1/\sqrt d`, the single-index scale):
  :math:`A_0 = a_0\,\mathbf 1\mathbf 1^\top`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..activations import get_activation
from ..errors import LoradynError, as_float, mu_tuple
from ..params import EXECUTION, Declared, param, parse_floats, parse_ints, validate

Array = np.ndarray
NORMS = ("none", "1/K", "1/sqrt(K)", "auto")
ENGINES = ("dense", "reduced", "ode")
UPDATES = ("spherical", "renormalized")
CLOSED_FORM = ("linear", "he2-norm")


def activation_name(name: object, what: str) -> str:
    """The canonical name of activation ``name`` (lower case, no blanks, ``x``/``id``/
    ``identity`` -> ``linear``) after checking that it exists; ``what`` names the field in
    the one-line error."""
    if not isinstance(name, str):
        raise LoradynError(f"{what} must be an activation name such as linear or he2-norm")
    get_activation(name)
    key = name.strip().lower().replace(" ", "")
    return {"x": "linear", "id": "linear", "identity": "linear"}.get(key, key)


def _norm_key(norm: object) -> str:
    key = str(norm).strip().replace(" ", "")
    low = {"none": "none", "1": "none", "1/k": "1/K", "1/sqrt(k)": "1/sqrt(K)",
           "1/sqrtk": "1/sqrt(K)", "auto": "auto"}
    if key.lower() not in low:
        raise LoradynError(f"norm = {norm!r} is unknown: choose one of {', '.join(NORMS)}")
    return low[key.lower()]


def auto_norm(teacher: str, label: str | None = None) -> str:
    r"""The reference code's readout convention: ``1/sqrt(K)`` when the label function has
    Gaussian mean zero (:math:`E[T(\phi(z))] = 0`, :math:`z \sim N(0, 1)`; odd activations,
    normalized Hermite polynomials), ``1/K`` otherwise (relu, sigmoid, squared labels)."""
    from .moments import gaussian_means, target_fn

    m1, m2 = gaussian_means(target_fn(teacher, label))
    return "1/sqrt(K)" if abs(m1) <= 1e-12 * max(1.0, math.sqrt(abs(m2))) else "1/K"


def norm_factor(norm: str, K: int, teacher: str | None = None, label: str | None = None) -> float:
    r"""Output normalization :math:`\nu` (``none``: 1, ``1/K``, ``1/sqrt(K)``; ``auto`` picks
    one of the last two from the teacher's Gaussian mean, :func:`auto_norm`)."""
    key = _norm_key(norm)
    if key == "auto":
        if teacher is None:
            raise LoradynError("norm = auto needs the teacher activation to pick 1/K or 1/sqrt(K)")
        key = auto_norm(teacher, label)
    return {"none": 1.0, "1/K": 1.0 / K, "1/sqrt(K)": 1.0 / math.sqrt(K)}[key]


def _int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool):
        raise LoradynError(f"{name} = {value!r} is invalid: give an integer >= {lo}")
    try:
        v = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LoradynError(f"{name} = {value!r} is invalid: give an integer >= {lo}") from None
    if v != value and not (isinstance(value, float) and float(value).is_integer()):
        raise LoradynError(f"{name} = {value!r} is invalid: give an integer >= {lo}")
    if v < lo:
        raise LoradynError(f"{name} = {v} is too small: {name} must be an integer >= {lo}")
    return v


def _pos(name: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LoradynError(f"{name} = {value!r} is not a number: give a positive number") from None
    if not (math.isfinite(v) and v > 0):
        raise LoradynError(f"{name} = {value!r} is invalid: {name} must be a positive number")
    return v


def _mu_k(value: object) -> tuple[float, ...]:
    return mu_tuple(value, shape="a flat list of mu_k in [0, 1], one per teacher neuron")


def _a0(value: object, cfg: Any) -> float:
    return as_float("a0", 1.0 / math.sqrt(cfg.d) if value is None else value)


def _parse_m0(text: str) -> Any:
    """``--m0`` text: a number, or an ``r x K`` JSON list such as ``[[0.1, 0], [0, 0.2]]``."""
    try:
        return json.loads(text) if text.strip().startswith("[") else float(text)
    except ValueError:
        raise LoradynError(
            f"m0 = {text!r} is not a number or an r x K list such as [[0.1,0],[0,0.2]]"
        ) from None


@dataclass(frozen=True)
class TwoLayerConfig(Declared):
    r"""One two-layer LoRA run: model, optimizer and recording (physics), then how it is
    computed (execution options: ``engine``, ``noise_term``, ``stop_on_escape``).

    Every field is declared once with :func:`loradyn.params.param` (type, default, check,
    help); the CLI options of ``loradyn twolayer simulate``, the checks of a ``twolayer``
    sweep file, the canonical JSON and the hash (:meth:`key`) come from the declarations.

    Parameters
    ----------
    mu
        Pre-trained alignments :math:`\mu_k \in [0, 1]`, one per teacher neuron (``K = len(mu)``).
    rank
        LoRA rank ``r >= 1``.
    activation
        Student activation :math:`\sigma` (any registered name; closed forms and the ODE
        need ``linear`` or ``he2-norm``).
    teacher
        Teacher activation :math:`\phi` (default: the student's).
    norm
        Output normalization :math:`\nu`: ``none``, ``1/K``, ``1/sqrt(K)`` or ``auto``
        (``1/sqrt(K)`` for a label function with Gaussian mean zero, ``1/K`` otherwise, as
        the reference code of the paper; :func:`auto_norm`).
    d, lr, batch, steps
        Dimension, learning rate :math:`\eta`, fresh samples per step, SGD steps. ODE time is
        ``step * lr``.
    seeds, seed0
        Number of seeds and the first one.
    a0
        Initial entries of ``A`` (default :math:`1/\sqrt d`).
    m0
        ``None`` (directions uniform on the sphere), a number or an ``r x K`` nested list
        (see the module docstring).
    update
        ``spherical``
        (:math:`v_j \leftarrow \mathrm{normalize}(v_j - \eta P_{v_j}\nabla_{v_j}\ell)`) or
        ``renormalized`` (:math:`v_j \leftarrow \mathrm{normalize}(v_j - \eta\nabla_{v_j}\ell)`).
    threshold
        Escape when :math:`\max_j |M_{j\cdot}|_2 \ge` ``threshold`` (norm of the projection of
        a LoRA direction on the teacher span).
    record_every
        Record every this many steps (default ``max(1, steps // 500)``); the last step is
        always recorded.
    label
        Label transform applied per teacher neuron, ``identity`` or ``square``:
        :math:`y = \nu\sum_k T(\phi(w^*_k\cdot x))` (for ``K = 1`` the single-index labels).
    from_scratch
        Baseline without pre-training and without LoRA: the ``K`` student rows
        :math:`w_k` are trained directly from random unit vectors (``mu`` only sets ``K``;
        ``rank`` becomes ``K``, ``A`` is the identity and frozen, ``M`` is ``K x K``). Escape
        is the first step with :math:`\max_{jk}|M_{jk}| \ge` ``threshold`` (some row
        reaches the overlap with some teacher direction).
    ranks
        The ranks one :func:`loradyn.twolayer.simulate` call runs, stacked on a ``rank``
        dimension (default: ``(rank,)``); kept in the result's ``attrs["config"]``, so
        ``TwoLayerConfig.from_json(ds.attrs["config"])`` rebuilds the whole run.
    engine
        Execution option: ``reduced`` (default), ``dense`` or ``ode``; hashed (the engines
        agree in law, not sample by sample).
    noise_term
        Execution option of the ODE engine: include the finite-step drift proportional to
        :math:`\eta d/B`; hashed for the ODE engine only.
    stop_on_escape
        Execution option: end the run once every seed escaped (later records are NaN), for
        escape times; hashed, as it changes the recorded values.
    """

    # ---- physics: what is computed (always hashed)
    mu: Any = param((0.5, 0.5), "Pre-trained alignments mu_k in [0, 1], one per teacher "
                    "neuron (K = their number).", kind="floats",
                    check=lambda v, c: _mu_k(v),
                    cli_parse=lambda t: parse_floats(t, "mu"),
                    cli_help="Comma list of mu_k (K = its length).")
    rank: int = param(1, "LoRA rank r >= 1.", kind="int", check=lambda v, c: _int("rank", v, 1),
                      sweep_context={"d": 10**6})
    activation: str = param("linear", "Student activation (any registered name).", kind="str",
                            check=lambda v, c: activation_name(v, "activation"), cli=("-a",))
    teacher: str | None = param(None, "Teacher activation (default: the student's).",
                                kind="str",
                                check=lambda v, c: activation_name(c.activation if v is None else v,
                                                        "teacher"))
    norm: str = param("none", "Output normalization: none, 1/K, 1/sqrt(K) or auto.",
                      kind="str", check=lambda v, c: _norm_key(v))
    d: int = param(1000, "Input dimension (>= K + 2 r).", kind="int",
                   check=lambda v, c: _int("d", v, 2))
    lr: float = param(0.1, "Learning rate eta > 0 (ODE time = step * lr).", kind="float",
                      check=lambda v, c: _pos("lr", v))
    batch: int = param(100, "Fresh samples per step.", kind="int",
                       check=lambda v, c: _int("batch", v, 1))
    steps: int = param(2000, "Number of SGD steps.", kind="int",
                       check=lambda v, c: _int("steps", v, 1))
    seeds: int = param(1, "Number of independent seeds.", kind="int",
                       check=lambda v, c: _int("seeds", v, 1))
    seed0: int = param(0, "First seed (seeds seed0 .. seed0+seeds-1).", kind="int",
                       check=lambda v, c: _int("seed0", v, 0))
    a0: float | None = param(None, "Initial entries of A (default 1/sqrt(d)).", kind="float",
                             check=_a0)
    m0: Any = param(None, "Fixed initial overlaps M_0: a number or an r x K list (default: "
                    "directions uniform on the sphere).", kind="any", cli_parse=_parse_m0)
    update: str = param("spherical", "Update rule: spherical or renormalized.", kind="str",
                        choices=UPDATES)
    threshold: float = param(0.5, "Escape when max_j |M_j| >= this.", kind="float",
                             check=lambda v, c: _pos("threshold", v))
    record_every: int | None = param(None, "Record every k steps (default steps // 500).",
                                     kind="int",
                                     check=lambda v, c: _int(
                                         "record_every",
                                         max(1, c.steps // 500) if v is None else v, 1))
    label: str = param("identity", "Label transform per teacher neuron: identity or square.",
                       kind="str", check=lambda v, c: _label(v))
    from_scratch: bool = param(False, "Baseline: train the K x d first layer from random unit "
                               "rows (no pre-training, no LoRA; mu sets K).", kind="bool",
                               check=lambda v, c: bool(v))
    ranks: Any = param(None, "Ranks of one run, stacked on a rank dimension (default: "
                       "(rank,)).", kind="any",
                       cli_parse=lambda t: parse_ints(t, "ranks"),
                       cli_help="Comma list of ranks run together (default: --rank).",
                       sweep_context={"d": 10**6})
    # ---- execution options: how it is computed (hashed where they change the numbers)
    engine: str = param("reduced", "Engine: reduced (exact in law), dense or ode.", kind="str",
                        role=EXECUTION, choices=ENGINES, cli=("-e",))
    noise_term: bool = param(True, "ODE engine: include the finite-step (lr d / B) term.",
                             kind="bool", role=EXECUTION, check=lambda v, c: bool(v),
                             applies=lambda c: c.engine == "ode")
    stop_on_escape: bool = param(False, "End the run once every seed escaped (later records "
                                 "NaN).", kind="bool", role=EXECUTION,
                                 check=lambda v, c: bool(v))

    def __post_init__(self) -> None:
        validate(self)
        set_ = object.__setattr__
        if self.from_scratch:
            set_(self, "rank", len(self.mu))
        K, r = len(self.mu), self.rank
        if self.d < K + 2 * r:
            raise LoradynError(
                f"d = {self.d} is too small for K = {K} neurons and rank {r}: use d >= K + 2r"
                f" = {K + 2 * r}"
            )
        if self.m0 is not None:
            m0 = self.initial_overlaps()  # validates
            if np.isscalar(self.m0):
                set_(self, "m0", float(self.m0))  # type: ignore[arg-type]
            else:
                set_(self, "m0", [[float(v) for v in row] for row in m0])
        set_(self, "ranks", _ranks(self.ranks, self.rank))
        if self.d < K + 2 * max(self.ranks):
            raise LoradynError(
                f"d = {self.d} is too small for K = {K} neurons and rank {max(self.ranks)}: "
                f"use d >= K + 2r = {K + 2 * max(self.ranks)}"
            )

    # ----------------------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Number of teacher (and student) neurons."""
        return len(self.mu)

    @property
    def nu(self) -> float:
        r"""Output normalization :math:`\nu`."""
        return norm_factor(self.norm, self.K, self.teacher, self.label)

    @property
    def norm_used(self) -> str:
        """The normalization in force (``auto`` resolved to ``1/K`` or ``1/sqrt(K)``)."""
        return auto_norm(self.teacher, self.label) if self.norm == "auto" else self.norm

    @property
    def closed_form(self) -> bool:
        """True when the population loss has the closed form (linear / he2-norm pair)."""
        return (self.activation in CLOSED_FORM and self.teacher in CLOSED_FORM
                and self.label == "identity")

    def initial_overlaps(self) -> Array:
        """The fixed initial ``M_0`` (``r x K``) when ``m0`` is given (see module docstring)."""
        K, r = len(self.mu), int(self.rank)
        if np.isscalar(self.m0):
            try:
                m = float(self.m0)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise LoradynError("m0 must be a number or an r x K list of numbers") from None
            m0 = np.zeros((r, K))
            m0[np.arange(r), np.arange(r) % K] = m
        else:
            try:
                m0 = np.asarray(self.m0, dtype=float)
            except (TypeError, ValueError):
                raise LoradynError("m0 must be a number or an r x K list of numbers") from None
            if m0.shape != (r, K):
                raise LoradynError(
                    f"m0 has shape {m0.shape}: give a number or an r x K = {r} x {K} list"
                )
        if not np.all(np.isfinite(m0)) or np.any(np.sum(np.minimum(np.abs(m0), 2.0) ** 2,
                                                       axis=1) >= 1.0):
            raise LoradynError("m0 is invalid: every row of m0 must have norm < 1")
        return m0


def _label(value: object) -> str:
    from ..activations import get_label

    return get_label(value).name  # type: ignore[arg-type]


def _ranks(ranks: Any, rank: int) -> tuple[int, ...]:
    """``ranks`` as a non-empty tuple of integers >= 1 (``None``: ``(rank,)``)."""
    if ranks is None:
        return (int(rank),)
    if isinstance(ranks, str) or np.isscalar(ranks):
        ranks = [ranks]
    out = tuple(_int("ranks", r, 1) for r in ranks)
    if not out:
        raise LoradynError("ranks is empty: give at least one rank")
    if len(set(out)) != len(out):
        raise LoradynError("ranks contains a repeated rank: give each rank once")
    return out


@dataclass
class State:
    """Order parameters ``A`` (``... x K x r``), ``M`` (``... x r x K``), ``C`` (``.. x r x r``)."""

    A: Array
    M: Array
    C: Array

    def copy(self) -> State:
        return State(self.A.copy(), self.M.copy(), self.C.copy())


# --------------------------------------------------------------------------------------
# Exact random draws


def bartlett(rng: np.random.Generator, df: int, r: int) -> Array:
    r"""Lower-triangular Bartlett factor ``T``: :math:`T T^\top \sim` Wishart\ :sub:`r`\ (df, I).

    :math:`T_{ii} = \sqrt{\chi^2_{df - i}}` (``i = 0..r-1``), :math:`T_{ij} \sim N(0,1)` for
    ``i > j``. Needs ``df >= r``.
    """
    idx = np.arange(r)
    T = np.zeros((r, r))
    if r > 1:
        T[np.tril_indices(r, -1)] = rng.standard_normal(r * (r - 1) // 2)
    T[idx, idx] = np.sqrt(rng.chisquare(df - idx))
    return T


def psd_factor(S: Array) -> Array:
    r"""A square factor ``F`` with :math:`F F^\top = S` for a symmetric PSD ``S`` (Cholesky,
    falling back to the eigen-decomposition when ``S`` is singular)."""
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        lam, U = np.linalg.eigh(0.5 * (S + S.T))
        return U * np.sqrt(np.clip(lam, 0.0, None))


def wishart(rng: np.random.Generator, df: int, scale: Array) -> Array:
    r"""One exact draw of Wishart\ :sub:`r`\ (df, scale) as :math:`F T T^\top F^\top` (Bartlett)."""
    FT = psd_factor(scale) @ bartlett(rng, df, scale.shape[0])
    return FT @ FT.T


def initial_state(cfg: TwoLayerConfig, rng: np.random.Generator) -> State:
    """Draw ``(A_0, M_0, C_0)`` with the exact law of the dense initialization (see module doc)."""
    K, r, d = cfg.K, cfg.rank, cfg.d
    A = initial_A(cfg)
    if cfg.m0 is None:
        npar = rng.standard_normal((r, K))
        G = npar @ npar.T + bartlett_gram(rng, d - K, r)
        nrm = np.sqrt(np.diag(G))
        M = npar / nrm[:, None]
        C = G / np.outer(nrm, nrm)
    else:
        M = cfg.initial_overlaps()
        G0 = bartlett_gram(rng, d - K, r)
        g = np.sqrt(np.diag(G0))
        R0 = G0 / np.outer(g, g)
        s = np.sqrt(1.0 - np.sum(M * M, axis=1))
        C = M @ M.T + np.outer(s, s) * R0
    C[np.arange(r), np.arange(r)] = 1.0
    return State(A, M, C)


def initial_A(cfg: TwoLayerConfig) -> Array:
    """``A_0``: all entries ``a0``; the identity (frozen) for ``from_scratch``."""
    if cfg.from_scratch:
        return np.eye(cfg.K)
    return np.full((cfg.K, cfg.rank), float(cfg.a0))  # type: ignore[arg-type]


def effective_mu(cfg: TwoLayerConfig) -> Array:
    """The pre-trained alignments in the model: ``cfg.mu``, or zeros for ``from_scratch``."""
    return np.zeros(cfg.K) if cfg.from_scratch else np.asarray(cfg.mu, dtype=float)


def bartlett_gram(rng: np.random.Generator, df: int, r: int) -> Array:
    """Wishart_r(df, I) drawn as ``T T^T`` with the Bartlett factor."""
    T = bartlett(rng, df, r)
    return T @ T.T
