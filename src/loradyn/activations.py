r"""Activation functions and label transforms, by name.

A registry maps a name to an :class:`Activation`: the function, its first derivative,
its parity, the points where it is not smooth (kinks, used by the quadrature to split
the integration range) and, for polynomials, the exact coefficients in the
probabilists' Hermite basis :math:`\mathrm{He}_k`.

Names understood by :func:`get_activation`:

- ``linear`` (alias ``x``), ``relu``, ``erf``, ``tanh``, ``sigmoid``;
- ``heK`` for :math:`\mathrm{He}_K`, K = 1..30, and ``heK-norm`` for
  :math:`\mathrm{He}_K/\sqrt{K!}`;
- sums and scalar multiples of any registered names, e.g. ``he2+he3`` or
  ``0.5*relu+he3``;
- any name registered with :func:`register_activation`.

Label transforms (:func:`get_label`): ``identity`` and ``square``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import hermite_e as H
from scipy import special

from .errors import LoradynError

Array = np.ndarray
Fn = Callable[[Array], Array]

MAX_HERMITE_DEGREE = 30


@dataclass(frozen=True)
class Activation:
    r"""A scalar activation :math:`\sigma` with its derivative.

    Parameters
    ----------
    name
        Canonical name.
    f, df
        Vectorized callables for :math:`\sigma(x)` and :math:`\sigma'(x)`.
    parity
        ``+1`` for even, ``-1`` for odd, ``0`` for neither.
    kinks
        Points where :math:`\sigma` or :math:`\sigma'` is not smooth (``relu``: 0).
    hermite
        For polynomials, the coefficients :math:`a_k` with
        :math:`\sigma = \sum_k a_k \mathrm{He}_k`; ``None`` otherwise.
    paper_scale
        Factor between the paper's time unit and the natural one (:math:`K!\,K` for a pure
        ``heK``, whose learning rate the paper divides by :math:`K!\,K`; 1 otherwise).
    d2f
        Optional second derivative, used only for ``a(mu)`` at ``mu = 0``.
    """

    name: str
    f: Fn
    df: Fn
    parity: int = 0
    kinks: tuple[float, ...] = ()
    hermite: tuple[float, ...] | None = None
    paper_scale: float = 1.0
    d2f: Fn | None = field(default=None, compare=False)

    def __call__(self, x: Array) -> Array:
        r""":math:`\sigma(x)`."""
        return self.f(x)

    @property
    def degree(self) -> int | None:
        """Polynomial degree, or ``None`` for a non-polynomial activation."""
        if self.hermite is None:
            return None
        nz = np.nonzero(np.asarray(self.hermite))[0]
        return int(nz[-1]) if nz.size else 0

    @property
    def smooth(self) -> bool:
        """True when the activation has no kink (Gauss-Hermite quadrature applies)."""
        return not self.kinks


@dataclass(frozen=True)
class LabelTransform:
    """A label transform ``T`` (labels ``y = T(phi(z*))``) with its derivative."""

    name: str
    f: Fn
    df: Fn


# --------------------------------------------------------------------------------------
# Builders


def _sigmoid(x: Array) -> Array:
    return special.expit(x)


def _dsigmoid(x: Array) -> Array:
    s = special.expit(x)
    return s * (1.0 - s)


def hermite_activation(coeffs: Array | list[float], name: str | None = None) -> Activation:
    r"""An activation :math:`\sum_k a_k \mathrm{He}_k(x)` from its Hermite coefficients.

    The derivative uses :math:`\mathrm{He}_k' = k\,\mathrm{He}_{k-1}`.
    """
    c = np.trim_zeros(np.asarray(coeffs, dtype=float), "b")
    if c.size == 0:
        c = np.zeros(1)
    dc = H.hermeder(c) if c.size > 1 else np.zeros(1)
    d2c = H.hermeder(dc) if dc.size > 1 else np.zeros(1)
    nz = np.nonzero(c)[0]
    parity = 0
    if nz.size and np.all(nz % 2 == 0):
        parity = 1
    elif nz.size and np.all(nz % 2 == 1):
        parity = -1
    label = name or "+".join(f"{v:g}*he{k}" for k, v in enumerate(c) if v != 0) or "zero"
    return Activation(
        name=label,
        f=_series(c),
        df=_series(dc),
        d2f=_series(d2c),
        parity=parity,
        hermite=tuple(float(v) for v in c),
    )


#: up to this degree a Hermite series is evaluated by Horner's rule in the power basis (its
#: coefficients are small integers times the series' ones, so no cancellation beyond a few
#: ulps on the quadrature's range); higher degrees keep the stable Clenshaw recursion
_HORNER_MAX_DEGREE = 6


def _series(c: np.ndarray) -> Callable[[Array], Array]:
    """``x -> sum_k c_k He_k(x)``: Horner's rule for low degree, else ``hermeval``."""
    if c.size - 1 > _HORNER_MAX_DEGREE:
        return lambda x, c=c: H.hermeval(x, c)
    pc = tuple(float(v) for v in H.herme2poly(c)[::-1])  # highest power first

    def f(x: Array, pc: tuple = pc) -> Array:
        x = np.asarray(x, dtype=float)
        out = np.full(x.shape, pc[0])
        for a in pc[1:]:
            out = out * x + a
        return out[()] if out.ndim == 0 else out  # a scalar for a scalar, as hermeval

    return f


def _he(k: int, norm: bool) -> Activation:
    c = np.zeros(k + 1)
    c[k] = 1.0 / math.sqrt(math.factorial(k)) if norm else 1.0
    name = f"he{k}-norm" if norm else f"he{k}"
    act = hermite_activation(c, name=name)
    scale = 1.0 if norm else float(math.factorial(k) * k)
    return Activation(
        name=act.name,
        f=act.f,
        df=act.df,
        d2f=act.d2f,
        parity=act.parity,
        hermite=act.hermite,
        paper_scale=scale,
    )


def _builtin() -> dict[str, Activation]:
    sq = 2.0 / math.sqrt(math.pi)
    lin = hermite_activation([0.0, 1.0], name="linear")
    acts = {
        "linear": lin,
        "relu": Activation(
            "relu",
            f=lambda x: np.maximum(x, 0.0),
            df=lambda x: (np.asarray(x) > 0).astype(float),
            parity=0,
            kinks=(0.0,),
        ),
        "erf": Activation(
            "erf",
            f=special.erf,
            df=lambda x: sq * np.exp(-np.square(x)),
            d2f=lambda x: -2.0 * sq * x * np.exp(-np.square(x)),
            parity=-1,
        ),
        "tanh": Activation(
            "tanh",
            f=np.tanh,
            df=lambda x: 1.0 - np.tanh(x) ** 2,
            d2f=lambda x: -2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2),
            parity=-1,
        ),
        "sigmoid": Activation(
            "sigmoid",
            f=_sigmoid,
            df=_dsigmoid,
            d2f=lambda x: _dsigmoid(x) * (1.0 - 2.0 * _sigmoid(x)),
            parity=0,
        ),
    }
    return acts


_REGISTRY: dict[str, Activation] = _builtin()
_ALIASES = {"x": "linear", "id": "linear", "identity": "linear"}
_HE = re.compile(r"^he(\d+)(-norm)?$")
_TERM = re.compile(r"^\s*(?:([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*\*)?\s*([A-Za-z_][\w\-]*)\s*$")


def register_activation(
    name: str,
    f: Fn,
    df: Fn,
    *,
    parity: int = 0,
    kinks: tuple[float, ...] | list[float] = (),
    d2f: Fn | None = None,
    overwrite: bool = False,
) -> Activation:
    r"""Register a user activation so that every part of loradyn can use it by name.

    Parameters
    ----------
    name
        The name to use (letters, digits, ``_``, ``-``).
    f, df
        Vectorized :math:`\sigma(x)` and :math:`\sigma'(x)`.
    parity
        ``+1`` even, ``-1`` odd, ``0`` neither (used for reporting only).
    kinks
        Points where :math:`\sigma'` is discontinuous; the quadrature splits there.
    d2f
        Optional :math:`\sigma''`, used only for the ``mu = 0`` limit of ``a(mu)``.
    overwrite
        Replace an existing registration of the same name.

    Returns
    -------
    Activation
        The registered activation.
    """
    if not isinstance(name, str):
        raise LoradynError(f"activation name {name!r} is invalid: give a string such as 'mytanh'")
    for what, fn in (("f", f), ("df", df), ("d2f", d2f)):
        if fn is not None and not callable(fn):
            raise LoradynError(f"activation {name!r}: {what} must be a function, got {fn!r}")
    if f is None or df is None:
        raise LoradynError(f"activation {name!r}: give both f and df (the derivative)")
    key = name.strip().lower()
    if not re.fullmatch(r"[a-z_][\w\-]*", key):
        raise LoradynError(f"activation name {name!r} is invalid: use letters, digits, _ or -")
    if (key in _REGISTRY or key in _ALIASES or _HE.match(key)) and not overwrite:
        raise LoradynError(
            f"activation {name!r} already exists: pick another name or pass overwrite=True"
        )
    x = np.linspace(-2.0, 2.0, 5)
    try:
        fx, dfx = np.asarray(f(x), dtype=float), np.asarray(df(x), dtype=float)
    except Exception as exc:  # noqa: BLE001
        raise LoradynError(f"activation {name!r} cannot be evaluated on an array: {exc}") from exc
    if fx.shape != x.shape or dfx.shape != x.shape:
        raise LoradynError(f"activation {name!r} must map an array to an array of the same shape")
    act = Activation(key, f=f, df=df, d2f=d2f, parity=int(parity), kinks=tuple(map(float, kinks)))
    _REGISTRY[key] = act
    return act


def unregister_activation(name: str) -> None:
    """Remove a user-registered activation (built-ins cannot be removed)."""
    key = name.strip().lower()
    if key in _builtin():
        raise LoradynError(f"{name!r} is built in and cannot be removed")
    _REGISTRY.pop(key, None)


def registered_activation(name: str) -> Activation | None:
    """The activation registered under exactly ``name`` (built-in or by
    :func:`register_activation`), or ``None``: no alias, Hermite name or sum is parsed."""
    return _REGISTRY.get(name)


def available_activations() -> list[str]:
    """Names accepted by :func:`get_activation` (Hermite families shown as patterns)."""
    return sorted(_REGISTRY) + ["x", "heK (K=1..30)", "heK-norm", "sums like he2+he3"]


def _single(name: str) -> Activation:
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    m = _HE.match(key)
    if m:
        k = int(m.group(1))
        if not 1 <= k <= MAX_HERMITE_DEGREE:
            raise LoradynError(
                f"Hermite degree {k} in {name!r} is out of range: "
                f"use he1 ... he{MAX_HERMITE_DEGREE}"
            )
        return _he(k, bool(m.group(2)))
    known = ", ".join(sorted(set(_REGISTRY) | {"x", "heK", "heK-norm"}))
    raise LoradynError(f"unknown activation {name!r}: choose one of {known}, or a sum like he2+he3")


def _combine(terms: list[tuple[float, Activation]], name: str) -> Activation:
    if all(a.hermite is not None for _, a in terms):
        n = max(len(a.hermite or ()) for _, a in terms)
        c = np.zeros(n)
        for w, a in terms:
            h = np.asarray(a.hermite)
            c[: h.size] += w * h
        return hermite_activation(c, name=name)
    fs = [(w, a) for w, a in terms]
    parities = {a.parity for _, a in terms}
    parity = parities.pop() if len(parities) == 1 else 0
    kinks = tuple(sorted({k for _, a in terms for k in a.kinks}))
    has_d2 = all(a.d2f is not None for _, a in terms)
    return Activation(
        name=name,
        f=lambda x: sum(w * a.f(x) for w, a in fs),
        df=lambda x: sum(w * a.df(x) for w, a in fs),
        d2f=(lambda x: sum(w * a.d2f(x) for w, a in fs)) if has_d2 else None,  # type: ignore[misc]
        parity=parity,
        kinks=kinks,
    )


def get_activation(name: str | Activation) -> Activation:
    """Look up an activation by name (see the module docstring for the grammar).

    Raises
    ------
    LoradynError
        For an unknown name, with the list of known names.
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or not name.strip():
        raise LoradynError("activation name is empty: give e.g. linear, relu, erf or he3")
    key = name.strip().lower().replace(" ", "")
    if "+" not in key and "*" not in key:
        return _single(key)
    parts = re.split(r"(?<![0-9][eE])\+", key)
    if any(not p for p in parts):
        raise LoradynError(f"cannot parse activation {name!r}: a '+' needs a term on each side")
    terms: list[tuple[float, Activation]] = []
    for p in parts:
        m = _TERM.match(p)
        if not m:
            raise LoradynError(f"cannot parse {p!r} in activation {name!r}: write e.g. 0.5*he2+he3")
        w = float(m.group(1)) if m.group(1) else 1.0
        terms.append((w, _single(m.group(2))))
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return _combine(terms, key)


_LABELS = {
    "identity": LabelTransform("identity", f=lambda y: y, df=lambda y: np.ones_like(y)),
    "square": LabelTransform("square", f=np.square, df=lambda y: 2.0 * y),
}


def get_label(name: str | LabelTransform | None) -> LabelTransform:
    """Look up a label transform: ``identity`` (also ``None``/``none``) or ``square``."""
    if isinstance(name, LabelTransform):
        return name
    key = "identity" if name in (None, "none", "id") else str(name).strip().lower()
    if key not in _LABELS:
        raise LoradynError(f"unknown label transform {name!r}: choose identity or square")
    return _LABELS[key]


@dataclass(frozen=True)
class Target:
    r"""The teacher's label as a function of :math:`z^* = w^*\cdot x`: :math:`y = T(\phi(z^*))`.

    ``y(z)`` and its derivative ``dy(z) = T'(\phi(z))\,\phi'(z)``; ``kinks`` are those of
    :math:`\phi`.
    """

    teacher: Activation
    label: LabelTransform

    def y(self, z: Array) -> Array:
        r"""The label :math:`y(z) = T(\phi(z))`."""
        return self.label.f(self.teacher.f(z))

    def dy(self, z: Array) -> Array:
        r"""Its derivative :math:`y'(z) = T'(\phi(z))\,\phi'(z)`."""
        return self.label.df(self.teacher.f(z)) * self.teacher.df(z)

    @property
    def kinks(self) -> tuple[float, ...]:
        """Kinks of the teacher :math:`\\phi`."""
        return self.teacher.kinks

    @property
    def name(self) -> str:
        """``teacher`` or ``label(teacher)``, e.g. ``square(he3)``."""
        t = self.teacher.name
        return t if self.label.name == "identity" else f"{self.label.name}({t})"


def make_target(teacher: str | Activation, label: str | LabelTransform | None = None) -> Target:
    """Combine a teacher activation and a label transform into a :class:`Target`."""
    return Target(get_activation(teacher), get_label(label))
