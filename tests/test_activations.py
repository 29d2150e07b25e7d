"""Activation registry: values, derivatives, parsing, user registration, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial import hermite_e as H

from loradyn.activations import (
    get_activation,
    get_label,
    make_target,
    register_activation,
    unregister_activation,
)
from loradyn.errors import LoradynError

X = np.linspace(-3.0, 3.0, 41)
NAMES = ["linear", "x", "relu", "erf", "tanh", "sigmoid", "he1", "he3", "he4-norm", "he7",
         "he2+he3", "0.5*relu+he3", "erf+tanh"]


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_difference(name):
    act = get_activation(name)
    x = X[np.abs(X) > 0.05]  # away from the relu kink
    h = 1e-6
    fd = (act.f(x + h) - act.f(x - h)) / (2 * h)
    scale = 1.0 + np.abs(fd)
    assert np.max(np.abs(fd - act.df(x)) / scale) < 1e-6
    if act.d2f is not None:
        fd2 = (act.df(x + h) - act.df(x - h)) / (2 * h)
        assert np.max(np.abs(fd2 - act.d2f(x)) / (1.0 + np.abs(fd2))) < 1e-5


def test_hermite_family_values():
    for k in (1, 2, 5, 12):
        c = np.zeros(k + 1)
        c[k] = 1.0
        assert np.allclose(get_activation(f"he{k}").f(X), H.hermeval(X, c))
        assert np.allclose(
            get_activation(f"he{k}-norm").f(X), H.hermeval(X, c) / math.sqrt(math.factorial(k))
        )
        assert get_activation(f"he{k}").paper_scale == math.factorial(k) * k
        assert get_activation(f"he{k}").parity == (1 if k % 2 == 0 else -1)
    assert np.allclose(get_activation("he3").f(X), X**3 - 3 * X)


def test_sums_and_scalars():
    s = get_activation("he2+he3")
    assert np.allclose(s.f(X), (X**2 - 1) + (X**3 - 3 * X))
    assert s.degree == 3
    t = get_activation("0.5*relu+he3")
    assert np.allclose(t.f(X), 0.5 * np.maximum(X, 0) + X**3 - 3 * X)
    assert t.kinks == (0.0,)


@pytest.mark.parametrize("bad", ["foo", "he0", "he31", "he2+", "2*", "", "relu+nope"])
def test_unknown_activation_is_one_line_error(bad):
    with pytest.raises(LoradynError) as exc:
        get_activation(bad)
    assert "\n" not in str(exc.value)


def test_register_custom_activation_and_use_everywhere():
    from loradyn.linearization import tau
    from loradyn.population import make_problem, population

    name = "test_softplus_act"
    act = register_activation(
        name,
        f=lambda x: np.logaddexp(0.0, x),
        df=lambda x: 1.0 / (1.0 + np.exp(-x)),
        overwrite=True,
    )
    try:
        assert get_activation(name) is act
        r = tau(name, [0.2, 0.6])
        assert np.all(np.isfinite(r.tau)) and np.all(r.tau > 0)
        pop = population(make_problem(name), 0.3, 0.2, 0.5)
        assert np.isfinite(pop.loss) and pop.loss > 0
        # a sum with a built-in works too
        mixed = get_activation(f"{name}+he2")
        assert np.allclose(mixed.f(X), np.logaddexp(0.0, X) + X**2 - 1)
        with pytest.raises(LoradynError):
            register_activation(name, f=np.tanh, df=np.tanh)  # exists, no overwrite
    finally:
        unregister_activation(name)
    with pytest.raises(LoradynError):
        get_activation(name)


def test_register_rejects_non_vectorized():
    with pytest.raises(LoradynError):
        register_activation("test_scalar_only", f=lambda x: 1.0, df=lambda x: 0.0)


def test_labels():
    sq = get_label("square")
    assert np.allclose(sq.f(X), X**2) and np.allclose(sq.df(X), 2 * X)
    assert get_label(None).name == "identity"
    with pytest.raises(LoradynError):
        get_label("cube")
    t = make_target("he3", "square")
    h = 1e-6
    fd = (t.y(X + h) - t.y(X - h)) / (2 * h)
    assert np.max(np.abs(fd - t.dy(X)) / (1 + np.abs(fd))) < 1e-6
    assert t.name == "square(he3)"
