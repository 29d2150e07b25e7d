r"""One configuration object for a simulation run: :class:`RunConfig`.

A :class:`RunConfig` says *what* to simulate (teacher, student, label transform, loss,
pre-training alignment ``mu``, dimension, learning rate, batch, steps, seeds,
initialization, update rule, pre-training variant, two-stage schedule) and *how*
(engine, backend, recording). Every engine of :mod:`loradyn.engines` takes one and
returns an :class:`xarray.Dataset` of the same layout.

Normalization on construction (so that equal runs have equal keys):

- ``mu`` becomes a tuple of floats (a scalar gives a one-element tuple);
- ``student=None`` becomes the teacher's name; activation names are kept as given
  (lower-cased, blanks removed) after checking them with
  :func:`loradyn.activations.get_activation`;
- ``u0=None`` becomes :math:`1/\sqrt d` (the paper's scale);
- ``record_every=None`` becomes ``max(1, steps // 1000)`` (about a thousand recorded
  points per trajectory).

``m0=None`` means :math:`w_0` uniform on the sphere (so
:math:`m_0 = 2\,\mathrm{Beta}(\tfrac{d-1}2, \tfrac{d-1}2) - 1`); a number fixes
:math:`m_0 = w_0\cdot w^*` with the rest of :math:`w_0` uniform on the orthogonal sphere.
``p0`` does the same for :math:`p_0 = w_0\cdot v` in the misaligned model. The ODE
engine, which needs a deterministic start, uses :math:`m_0 = p_0 = 1/\sqrt d` unless set.

Two-stage schedule (theory.md section 9): train on ``label`` first; each trajectory
switches to ``switch_label`` at step ``switch_step`` or as soon as
:math:`|m| \ge` ``switch_m``, whichever comes first. ``switch_label=None`` (default) means
a single stage.

Every invalid value raises :class:`~loradyn.errors.LoradynError` with one line saying
what to change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import get_activation, get_label
from .errors import LoradynError, as_float, mu_tuple
from .params import EXECUTION, Declared, param, validate

if TYPE_CHECKING:  # pragma: no cover
    from .population import Problem

ENGINES = ("reduced", "dense", "ode")
BACKENDS = ("numpy", "torch")
UPDATES = ("spherical", "renormalized")
PRETRAININGS = ("aligned", "misaligned")
LOSSES = ("mse", "correlation")
LABELS = ("identity", "square")
DIRECTIONS = ("e1", "random")
SAMPLERS = ("auto", "samples", "gram")
DTYPES = ("float64", "float32")


def _choice(name: str, value: object, options: tuple[str, ...]) -> str:
    v = str(value).strip().lower() if value is not None else ""
    if v not in options:
        raise LoradynError(f"{name} = {value!r} is unknown: choose one of {', '.join(options)}")
    return v


def _int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float | np.floating) and float(value).is_integer():
            value = int(value)
        else:
            raise LoradynError(f"{name} = {value!r} is invalid: {name} must be an integer >= {lo}")
    if int(value) < lo:
        raise LoradynError(f"{name} = {value} is too small: {name} must be an integer >= {lo}")
    return int(value)


def _float(name: str, value: object) -> float:
    # a string or a bool is refused like d='1000' is (no silent conversion)
    return as_float(name, value)


def _act_name(name: str, what: str) -> str:
    if not isinstance(name, str):
        raise LoradynError(f"{what} must be an activation name such as linear, erf or he3")
    get_activation(name)  # raises LoradynError with the list of known names
    return name.strip().lower().replace(" ", "")


def _label_name(name: object, what: str) -> str:
    if name is None:
        return "identity"
    if not isinstance(name, str) or not name.strip():
        raise LoradynError(f"{what} = {name!r} is unknown: choose identity or square")
    lab = get_label(name)  # type: ignore[arg-type]
    if lab.name not in LABELS:
        raise LoradynError(f"{what} = {name!r} is unknown: choose identity or square")
    return lab.name


def _mu_tuple(mu: object) -> tuple[float, ...]:
    return mu_tuple(mu, distinct=True)


def _parse_mu(text: str) -> tuple[float, ...]:
    from .linearization import parse_mu_spec

    return tuple(float(v) for v in parse_mu_spec(text))


def _positive(name: str, value: object) -> float:
    v = _float(name, value)
    if v <= 0:
        raise LoradynError(f"{name} = {v:g} is invalid: the learning rate must be > 0")
    return v


def _unit(name: str, value: object) -> float:
    v = _float(name, value)
    if not 0.0 < v <= 1.0:
        raise LoradynError(f"{name} = {v:g} is invalid: choose it in (0, 1]")
    return v


def _overlap(name: str, value: object) -> float | None:
    if value is None:
        return None
    v = _float(name, value)
    if not -1.0 <= v <= 1.0:
        raise LoradynError(f"{name} = {v:g} is outside [-1, 1]: an overlap needs |{name}| <= 1")
    return v


def _check_seed0(value: object, cfg: Any) -> int:
    v = _int("seed0", value, 0)
    if v + cfg.seeds - 1 > np.iinfo(np.int64).max:
        raise LoradynError(
            f"seed0 = {v} is too large: seeds are 64-bit integers, "
            f"seed0 + seeds - 1 must be at most {np.iinfo(np.int64).max}"
        )
    return v


def _check_record_every(value: object, cfg: Any) -> int:
    re = max(1, cfg.steps // 1000) if value is None else value
    return _int("record_every", re, 1)


def resolve_device_name(value: str | None) -> str:
    """The torch device that will run: ``value``, or (``None``/``auto``) cuda when
    available, else cpu. Used to resolve a device before it is hashed."""
    if value and str(value) != "auto":
        return str(value)
    try:
        import torch
    except ImportError:  # the run itself will say that torch is needed
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def linear_coefficient(name: str) -> float | None:
    r"""The slope :math:`c_1` of an activation :math:`\sigma(z) = c_1 z` (Hermite coefficients
    of degree 0 and 1 only, degree 0 zero); ``None`` when it is not of that form."""
    h = get_activation(name).hermite
    if h is None or len(h) > 2 or (len(h) >= 1 and h[0] != 0.0):
        return None
    return float(h[1]) if len(h) == 2 else 0.0


@dataclass(frozen=True)
class RunConfig(Declared):
    r"""Configuration of one simulation run (several ``mu`` and seeds).

    Parameters
    ----------
    teacher, student
        Activation names (:func:`loradyn.activations.get_activation`); the student
        defaults to the teacher.
    label
        Label transform ``identity`` or ``square`` (labels :math:`y = T(\phi(z^*))`); the
        stage-1 label of a two-stage schedule.
    loss
        ``mse`` (:math:`(y-\hat y)^2/2`) or ``correlation`` (:math:`-y\hat y`).
    mu
        Pre-training alignment(s) in [0, 1]: a number or a list.
    d, lr, batch, steps
        Dimension (>= 3), learning rate :math:`\eta > 0`, batch size :math:`B` (fresh
        samples per step) and number of SGD steps. ODE time is ``step * lr``.
    seeds, seed0
        Number of independent seeds and the first one (seeds ``seed0 .. seed0+seeds-1``).
    u0
        Initial LoRA scale (default :math:`1/\sqrt d`).
    m0, p0
        Fixed initial overlaps :math:`w_0\cdot w^*` and (misaligned) :math:`w_0\cdot v`;
        ``None`` draws :math:`w_0` uniformly on the sphere.
    update
        ``spherical`` (:math:`w \leftarrow \mathrm{normalize}(w - \eta P_w\nabla_w\ell)`)
        or ``renormalized`` (:math:`w \leftarrow \mathrm{normalize}(w - \eta\nabla_w\ell)`).
    pretraining
        ``aligned`` (:math:`\lambda = (\mu w^* + u w)\cdot x`) or ``misaligned`` (App. A.1:
        :math:`\lambda = (\mu w^* + \sqrt{1-\mu^2} v + u w)\cdot x`).
    record_every
        Record ``(u, m)`` every this many steps (default ``max(1, steps // 1000)``); the
        last step is always recorded. Escape and divergence are detected at every step.
    threshold
        Escape threshold on :math:`|m|` (default 0.5).
    engine
        ``reduced`` (exact in law, O(batch) per step), ``dense`` (d-dimensional) or
        ``ode`` (population flow with the finite-step term).
    backend, device
        Dense engine only: ``numpy`` or ``torch``; torch ``device`` (``None``: cuda when
        available, else cpu).
    teacher_direction
        Dense engine only: :math:`w^* = e_1` (``e1``, the default) or a random unit vector.
    switch_u
        Two-stage re-alignment (App. B.4): at the switch, ``u`` is set to
        ``switch_u * sign(w . w0)`` (``w0 = mu w* (+ sqrt(1-mu^2) v)`` the pre-trained weight,
        so the sign is known without the teacher), which makes the LoRA update add to the
        pre-trained direction. ``None`` (default): ``u`` is kept.
    switch_label, switch_step, switch_m
        Two-stage schedule: the label used after the switch, and the step and/or the
        :math:`|m|` level that trigger it.
    nodes
        Quadrature size for the exact test MSE and the ODE (default: the problem's own).
    sampler
        Reduced engine only: ``samples`` draws the batch projections (O(batch) per step);
        ``gram`` draws their 2x2 (3x3 misaligned) Gram matrix (Bartlett), exact in O(1)
        per step when the per-sample gradient is linear in the projections (linear
        teacher and student, identity label); ``auto`` picks ``gram`` when it applies.
    dtype
        Dense engine only: ``float64`` (default) or ``float32``, the precision in which the
        samples are drawn and projected and the weights updated (``u``, the recorded
        overlaps and losses stay float64). Hashed for the dense engine, as it changes the
        numbers; a float32 run whose steps float32 cannot resolve is refused
        (:func:`loradyn.engines.dense.check_float32`).
    """

    # ---- physics: what is computed (always hashed)
    teacher: str = param("linear", "Teacher activation, e.g. linear, erf, relu, he3.",
                         kind="str", check=lambda v, c: _act_name(v, "teacher"), cli=("-t",))
    student: str | None = param(None, "Student activation (default: the teacher's).", kind="str",
                                check=lambda v, c: c.teacher if v is None
                                 else _act_name(v, "student"),
                                cli=("-s",))
    label: str = param("identity", "Label transform: identity or square (stage 1).", kind="str",
                       check=lambda v, c: _label_name(v, "label"))
    loss: str = param("mse", "Loss: mse or correlation.", kind="str", choices=LOSSES)
    mu: Any = param((0.5,), "Pre-training alignment(s) in [0, 1].", kind="floats",
                    check=lambda v, c: _mu_tuple(v), cli_parse=_parse_mu,
                    cli_help="Alignment(s) mu: a comma list or START:STOP:NUM.")
    d: int = param(1000, "Dimension (>= 3).", kind="int", check=lambda v, c: _int("d", v, 3))
    lr: float = param(0.2, "Learning rate eta > 0 (ODE time = step * lr).", kind="float",
                      check=lambda v, c: _positive("lr", v))
    batch: int = param(500, "Fresh samples per step.", kind="int",
                       check=lambda v, c: _int("batch", v, 1))
    steps: int = param(10000, "Number of SGD steps.", kind="int",
                       check=lambda v, c: _int("steps", v, 1))
    seeds: int = param(1, "Number of independent seeds.", kind="int",
                       check=lambda v, c: _int("seeds", v, 1))
    seed0: int = param(0, "First seed (seeds seed0 .. seed0+seeds-1).", kind="int",
                       check=_check_seed0)
    u0: float | None = param(None, "Initial LoRA scale u (default 1/sqrt(d)).", kind="float",
                             check=lambda v, c: 1.0 / math.sqrt(c.d) if v is None
                             else _float("u0", v))
    m0: float | None = param(None, "Fixed initial overlap w0.w* (default: w0 uniform).",
                             kind="float", check=lambda v, c: _overlap("m0", v))
    p0: float | None = param(None, "Misaligned only: fixed initial overlap w0.v.", kind="float",
                             check=lambda v, c: _overlap("p0", v),
                             sweep_context={"pretraining": "misaligned"})
    update: str = param("spherical", "Update rule: spherical or renormalized.", kind="str",
                        choices=UPDATES)
    pretraining: str = param("aligned", "Pre-training: aligned or misaligned (App. A.1).",
                             kind="str", choices=PRETRAININGS)
    record_every: int | None = param(None, "Record every k steps (default steps // 1000).",
                                     kind="int", check=_check_record_every)
    threshold: float = param(0.5, "Escape threshold on |m|, in (0, 1].", kind="float",
                             check=lambda v, c: _unit("threshold", v))
    switch_label: str | None = param(None, "Two-stage schedule: the label after the switch.",
                                     kind="str",
                                     check=lambda v, c: None if v is None
                                     else _label_name(v, "switch_label"),
                                     sweep_context={"switch_step": 0})
    switch_step: int | None = param(None, "Two-stage: switch at this step.", kind="int",
                                    check=lambda v, c: None if v is None
                                    else _int("switch_step", v, 0),
                                    sweep_context={"switch_label": "square"})
    switch_m: float | None = param(None, "Two-stage: switch when |m| >= this, in (0, 1].",
                                   kind="float",
                                   check=lambda v, c: None if v is None
                                   else _unit("switch_m", v),
                                   sweep_context={"switch_label": "square"})
    switch_u: float | None = param(None, "Two-stage: at the switch set u = switch_u * "
                                   "sign(w.w0) (re-align the LoRA scale with the pre-trained "
                                   "weight; App. B.4 recovery).", kind="float",
                                   check=lambda v, c: None if v is None
                                   else _float("switch_u", v),
                                   sweep_context={"switch_label": "square", "switch_m": 0.25})
    nodes: int | None = param(None, "Quadrature nodes for the exact MSE and the ODE "
                              "(default: the problem's own).", kind="int",
                              check=lambda v, c: None if v is None else _int("nodes", v, 2))
    # ---- execution options: how it is computed (hashed only where they change the numbers)
    engine: str = param("reduced", "Engine: reduced (exact in law), dense or ode.", kind="str",
                        role=EXECUTION, choices=ENGINES, cli=("-e",))
    backend: str = param("numpy", "Dense engine: numpy or torch.", kind="str", role=EXECUTION,
                         choices=BACKENDS, applies=lambda c: c.engine == "dense")
    device: str | None = param(None, "Dense engine, torch backend: device (default: cuda "
                               "when available, else cpu).", kind="str", role=EXECUTION,
                               check=lambda v, c: str(v).strip().lower() or None
                               if v is not None else None,
                               applies=lambda c: c.engine == "dense" and c.backend == "torch",
                               resolve=lambda v, c: resolve_device_name(v))
    teacher_direction: str = param("e1", "Dense engine: teacher w* = e1 or a random unit "
                                   "vector.", kind="str", role=EXECUTION, choices=DIRECTIONS,
                                   applies=lambda c: c.engine == "dense")
    sampler: str = param("auto", "Reduced engine: samples, gram (exact O(1) per step for "
                         "linear models) or auto.", kind="str", role=EXECUTION,
                         choices=SAMPLERS, applies=lambda c: c.engine == "reduced",
                         resolve=lambda v, c: c.resolved_sampler())
    dtype: str = param("float64", "Dense engine: float64 or float32 (samples, projections "
                       "and w; u, overlaps and losses are recorded in float64).", kind="str",
                       role=EXECUTION, choices=DTYPES, applies=lambda c: c.engine == "dense")

    def __post_init__(self) -> None:
        validate(self)
        if self.m0 is not None and self.p0 is not None and self.m0**2 + self.p0**2 > 1.0:
            raise LoradynError("m0^2 + p0^2 > 1: the initial overlaps must fit on the unit sphere")
        if self.pretraining == "aligned" and self.p0 is not None:
            raise LoradynError("p0 is only used with pretraining='misaligned': drop p0")
        if self.switch_label is not None:
            if self.switch_step is None and self.switch_m is None:
                raise LoradynError(
                    "switch_label needs a trigger: give switch_step and/or switch_m"
                )
        elif self.switch_step is not None or self.switch_m is not None:
            raise LoradynError(
                "switch_step/switch_m need switch_label: give the label after the switch"
            )
        if self.switch_u is not None and self.switch_label is None:
            raise LoradynError("switch_u needs a two-stage schedule: give switch_label and "
                               "switch_m (or switch_step)")

    # ------------------------------------------------------------------ views

    @property
    def mus(self) -> np.ndarray:
        """The ``mu`` values as a float array."""
        return np.asarray(self.mu, dtype=float)

    @property
    def seed_list(self) -> np.ndarray:
        """The seeds ``seed0 .. seed0 + seeds - 1``."""
        return np.arange(self.seed0, self.seed0 + self.seeds, dtype=np.int64)

    @property
    def two_stage(self) -> bool:
        """True when a two-stage schedule is configured."""
        return self.switch_label is not None

    @property
    def final_label(self) -> str:
        """The label the run ends on (used for the test MSE)."""
        return self.switch_label if self.switch_label is not None else self.label

    @property
    def record_steps(self) -> np.ndarray:
        """Recorded step indices: ``0, k, 2k, ...`` and always the last step."""
        grid = np.arange(0, self.steps + 1, self.record_every, dtype=np.int64)
        if grid[-1] != self.steps:
            grid = np.append(grid, np.int64(self.steps))
        return grid

    @property
    def step_noise(self) -> float:
        r"""The finite-step factor :math:`\eta d / B` of the ODE (theory.md section 4)."""
        return self.lr * self.d / self.batch

    def problem(self, label: str | None = None) -> Problem:
        """The :class:`~loradyn.population.Problem` of this run (``label`` overrides)."""
        from .population import make_problem

        return make_problem(
            self.teacher, self.student, label=label or self.label, loss=self.loss, nodes=self.nodes
        )

    def resolved_sampler(self) -> str:
        """The reduced engine's sampler: ``auto`` becomes ``gram`` when it is exact (linear
        teacher and student, identity labels in every stage), else ``samples``."""
        if self.sampler == "samples":
            return "samples"
        ok = self.gram_applies()
        if self.sampler == "gram" and not ok:
            raise LoradynError(
                "sampler='gram' needs linear teacher and student with identity labels: "
                "use sampler='samples' or 'auto'"
            )
        return "gram" if ok else "samples"

    def gram_applies(self) -> bool:
        """True when the per-sample gradient is linear in the projections (Gram exact)."""
        if self.label != "identity" or (self.two_stage and self.switch_label != "identity"):
            return False
        return (linear_coefficient(self.teacher) is not None
                and linear_coefficient(self.student) is not None)

    def with_mu(self, mu: float | Iterable[float]) -> RunConfig:
        """A copy with other ``mu`` values."""
        return self.replace(mu=mu)
