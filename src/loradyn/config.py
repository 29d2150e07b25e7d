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

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import get_activation, get_label
from .errors import LoradynError, as_float, check_mu

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
    if isinstance(mu, str):
        raise LoradynError(f"mu = {mu!r} is not a number: give mu in [0, 1] or a list of them")
    try:
        arr = np.atleast_1d(np.asarray(mu, dtype=float))
    except (TypeError, ValueError):
        raise LoradynError(f"mu = {mu!r} is not a number: give mu in [0, 1] or a list") from None
    if arr.ndim != 1:
        raise LoradynError("mu must be a number or a flat list of numbers in [0, 1]")
    check_mu(arr)
    if len(set(arr.tolist())) != arr.size:
        raise LoradynError("mu contains a repeated value: give each mu once")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class RunConfig:
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
    """

    teacher: str = "linear"
    student: str | None = None
    label: str = "identity"
    loss: str = "mse"
    mu: Any = (0.5,)
    d: int = 1000
    lr: float = 0.2
    batch: int = 500
    steps: int = 10000
    seeds: int = 1
    seed0: int = 0
    u0: float | None = None
    m0: float | None = None
    p0: float | None = None
    update: str = "spherical"
    pretraining: str = "aligned"
    record_every: int | None = None
    threshold: float = 0.5
    engine: str = "reduced"
    backend: str = "numpy"
    device: str | None = None
    teacher_direction: str = "e1"
    switch_label: str | None = None
    switch_step: int | None = None
    switch_m: float | None = None
    nodes: int | None = None
    sampler: str = "auto"

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "teacher", _act_name(self.teacher, "teacher"))
        student = self.student
        s(self, "student", self.teacher if student is None else _act_name(student, "student"))
        s(self, "label", _label_name(self.label, "label"))
        s(self, "loss", _choice("loss", self.loss, LOSSES))
        s(self, "mu", _mu_tuple(self.mu))
        s(self, "d", _int("d", self.d, 3))
        s(self, "lr", _float("lr", self.lr))
        if self.lr <= 0:
            raise LoradynError(f"lr = {self.lr:g} is invalid: the learning rate must be > 0")
        s(self, "batch", _int("batch", self.batch, 1))
        s(self, "steps", _int("steps", self.steps, 1))
        s(self, "seeds", _int("seeds", self.seeds, 1))
        s(self, "seed0", _int("seed0", self.seed0, 0))
        if self.seed0 + self.seeds - 1 > np.iinfo(np.int64).max:
            raise LoradynError(
                f"seed0 = {self.seed0} is too large: seeds are 64-bit integers, "
                f"seed0 + seeds - 1 must be at most {np.iinfo(np.int64).max}"
            )
        u0 = 1.0 / math.sqrt(self.d) if self.u0 is None else _float("u0", self.u0)
        s(self, "u0", u0)
        for name in ("m0", "p0"):
            v = getattr(self, name)
            if v is not None:
                v = _float(name, v)
                if not -1.0 <= v <= 1.0:
                    raise LoradynError(
                        f"{name} = {v:g} is outside [-1, 1]: an overlap needs |{name}| <= 1"
                    )
                s(self, name, v)
        if self.m0 is not None and self.p0 is not None and self.m0**2 + self.p0**2 > 1.0:
            raise LoradynError("m0^2 + p0^2 > 1: the initial overlaps must fit on the unit sphere")
        s(self, "update", _choice("update", self.update, UPDATES))
        s(self, "pretraining", _choice("pretraining", self.pretraining, PRETRAININGS))
        if self.pretraining == "aligned" and self.p0 is not None:
            raise LoradynError("p0 is only used with pretraining='misaligned': drop p0")
        re = max(1, self.steps // 1000) if self.record_every is None else self.record_every
        s(self, "record_every", _int("record_every", re, 1))
        s(self, "threshold", _float("threshold", self.threshold))
        if not 0.0 < self.threshold <= 1.0:
            raise LoradynError(f"threshold = {self.threshold:g} is invalid: choose it in (0, 1]")
        s(self, "engine", _choice("engine", self.engine, ENGINES))
        s(self, "backend", _choice("backend", self.backend, BACKENDS))
        if self.device is not None and not str(self.device).strip():
            s(self, "device", None)
        td = _choice("teacher_direction", self.teacher_direction, DIRECTIONS)
        s(self, "teacher_direction", td)
        if self.switch_label is not None:
            s(self, "switch_label", _label_name(self.switch_label, "switch_label"))
            if self.switch_step is None and self.switch_m is None:
                raise LoradynError(
                    "switch_label needs a trigger: give switch_step and/or switch_m"
                )
        elif self.switch_step is not None or self.switch_m is not None:
            raise LoradynError(
                "switch_step/switch_m need switch_label: give the label after the switch"
            )
        if self.switch_step is not None:
            s(self, "switch_step", _int("switch_step", self.switch_step, 0))
        if self.switch_m is not None:
            s(self, "switch_m", _float("switch_m", self.switch_m))
            if not 0.0 < self.switch_m <= 1.0:
                raise LoradynError(f"switch_m = {self.switch_m:g} is invalid: choose it in (0, 1]")
        if self.nodes is not None:
            s(self, "nodes", _int("nodes", self.nodes, 2))
        s(self, "sampler", _choice("sampler", self.sampler, SAMPLERS))

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

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field (``mu`` as a list)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys are an error)."""
        if not isinstance(data, Mapping):
            raise LoradynError(
                f"a configuration must be a mapping of field names to values, got "
                f"{type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise LoradynError(
                f"unknown configuration key {unknown[0]!r}: "
                f"valid keys are {', '.join(sorted(names))}"
            )
        return cls(**dict(data))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact): the same run gives the same string."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Inverse of :meth:`to_json`."""
        if not isinstance(text, str | bytes | bytearray):
            raise LoradynError(f"configuration JSON must be a string, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LoradynError(f"configuration is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LoradynError("configuration JSON must be an object")
        return cls.from_dict(data)

    def key(self) -> str:
        """A stable 16-hex-digit key of the full configuration (sha256 of :meth:`to_json`)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def hash(self) -> str:
        """Alias of :meth:`key`."""
        return self.key()

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_mu(self, mu: float | Iterable[float]) -> RunConfig:
        """A copy with other ``mu`` values."""
        return self.replace(mu=mu)
