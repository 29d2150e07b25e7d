"""Hermite machinery (App. B): coefficients, convergence, IE, variance mismatch, squared
labels, the mean of even He_K students, and the Prop. 3 exponents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loradyn.errors import LoradynError
from loradyn.hermite import (
    even_hermite_mean,
    even_hermite_mean_closed,
    hermite_coefficients,
    information_exponent,
    label_expansion,
    normalized_hermite,
    standard_from_variance,
    student_information_exponent,
    student_mean_dataset,
    tau_scaling,
)

SQ2PI = math.sqrt(2 * math.pi)


def test_normalized_hermite_is_orthonormal():
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / SQ2PI
    h = normalized_hermite(x, 25)
    gram = np.einsum("n,nj,nk->jk", w, h, h)
    assert np.allclose(gram, np.eye(26), atol=1e-12)


@pytest.mark.parametrize("name", ["he1", "he3", "he7", "he2+he3", "0.5*he4+he6", "he5-norm"])
def test_polynomial_coefficients_are_exact(name):
    from loradyn.activations import get_activation

    h = hermite_coefficients(name, kmax=10)
    exact = np.zeros(11)
    e = np.asarray(get_activation(name).hermite)
    exact[: e.size] = e
    assert np.max(np.abs(h.coeffs - exact)) < 1e-12
    assert h.error < 1e-12


def test_relu_and_erf_closed_forms_and_convergence():
    relu = hermite_coefficients("relu", kmax=8)
    # a_0 = 1/sqrt(2 pi), a_1 = 1/2, a_2 = 1/(2 sqrt(2 pi)), odd k >= 3 vanish,
    # a_4 = -1/(24 sqrt(2 pi))
    assert relu.coeffs[0] == pytest.approx(1 / SQ2PI, abs=1e-13)
    assert relu.coeffs[1] == pytest.approx(0.5, abs=1e-13)
    assert relu.coeffs[2] == pytest.approx(1 / (2 * SQ2PI), abs=1e-13)
    assert relu.coeffs[4] == pytest.approx(-1 / (24 * SQ2PI), abs=1e-13)
    assert np.max(np.abs(relu.coeffs[3::2])) < 1e-13
    assert relu.error < 1e-12 and relu.information_exponent() == 1
    erf = hermite_coefficients("erf", kmax=9)
    # a_1 = E[erf'(z)] = 2/sqrt(3 pi); even coefficients vanish
    assert erf.coeffs[1] == pytest.approx(2 / math.sqrt(3 * math.pi), abs=1e-13)
    assert np.max(np.abs(erf.coeffs[0::2])) < 1e-14
    assert erf.error < 1e-12
    # doubling again changes nothing at this level
    again = hermite_coefficients("erf", kmax=9, nodes=erf.nodes)
    assert np.max(np.abs(again.coeffs - erf.coeffs)) < 1e-13


def test_variance_basis_definition_against_direct_quadrature():
    Q = 0.6
    h = hermite_coefficients("tanh", variance=Q, kmax=6)
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / SQ2PI
    lam = math.sqrt(Q) * x  # l ~ N(0, Q)
    for k in range(7):
        c = np.zeros(k + 1)
        c[k] = 1.0
        heq = Q ** (k / 2) * np.polynomial.hermite_e.hermeval(lam / math.sqrt(Q), c)
        direct = np.sum(w * np.tanh(lam) * heq) / (math.factorial(k) * Q**k)
        assert h.coeffs[k] == pytest.approx(direct, abs=1e-12)


def test_information_exponent_and_tolerance():
    for k in (1, 2, 3, 6):
        assert hermite_coefficients(f"he{k}", kmax=8).information_exponent() == k
    assert hermite_coefficients("he2+he3", kmax=5).information_exponent() == 2
    mix = hermite_coefficients("0.001*he1+he3", kmax=5)
    assert mix.information_exponent() == 1
    assert mix.information_exponent(tol=1e-2) == 3
    assert information_exponent(np.array([1.0, 0.0, 0.0])) is None


@pytest.mark.parametrize("K", [3, 4, 5, 6, 7, 8])
def test_variance_mismatch_lowers_student_ie_to_at_most_two(K):
    assert student_information_exponent(f"he{K}", 1.0) == K
    for Q in (0.3, 0.8, 1.7):
        assert student_information_exponent(f"he{K}", Q) == (1 if K % 2 else 2)


@pytest.mark.parametrize("K", [2, 3, 5, 6])
def test_standard_from_variance_maps_pure_scaled_hermite(K):
    Q = 0.45
    cq = np.zeros(K + 1)
    cq[K] = 1.0
    std = standard_from_variance(cq, Q)
    # the function He_K^[Q] expanded directly by quadrature in the standard basis
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / SQ2PI
    e = np.zeros(K + 1)
    e[K] = 1.0
    f = Q ** (K / 2) * np.polynomial.hermite_e.hermeval(x / math.sqrt(Q), e)
    h = normalized_hermite(x, K)
    direct = np.einsum("n,n,nk->k", w, f, h) / np.sqrt(
        [math.factorial(k) for k in range(K + 1)]
    )
    assert np.allclose(std, direct, atol=1e-11)
    nz = np.nonzero(np.abs(std[1:]) > 1e-12)[0]
    assert nz[0] + 1 == (1 if K % 2 else 2)  # App. B.3: IE at most 2
    # and the round trip: coefficients in the Q basis of a standard He_K come back
    back = standard_from_variance(hermite_coefficients(f"he{K}", variance=Q, kmax=K).coeffs, Q)
    assert np.allclose(back, e, atol=1e-11)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 6, 7])
def test_squared_label_expansion(K):
    le = label_expansion(f"he{K}")
    expected = np.zeros(2 * K + 1)
    for r in range(K + 1):  # He_K^2 = sum_r C(K,r)^2 r! He_{2K-2r}
        expected[2 * K - 2 * r] += math.comb(K, r) ** 2 * math.factorial(r)
    assert np.allclose(le.coeffs, expected, rtol=1e-12, atol=1e-9)
    assert le.information_exponent() == 2  # App. B.4
    assert le.coeffs[2] == pytest.approx(K * K * math.factorial(K - 1), rel=1e-12)


def test_even_hermite_mean_matches_closed_form():
    mu = np.linspace(0.0, 1.0, 21)
    for K in (2, 4, 6, 8, 10, 3, 5):
        q = even_hermite_mean(K, mu)
        c = even_hermite_mean_closed(K, mu)
        assert np.allclose(q, c, rtol=1e-12, atol=1e-10 * math.prod(range(K - 1, 0, -2)))
    assert even_hermite_mean(4, 1.0) == pytest.approx(0.0, abs=1e-12)
    ds = student_mean_dataset((2, 4), mu)
    assert ds["mean"].shape == (2, 21) and "config" in ds.attrs
    with pytest.raises(LoradynError):
        even_hermite_mean(4, 1.5)


def test_prop3_exponents():
    """tau ~ mu^-2 (odd He_K) or finite (even He_K) as mu -> 0; tau ~ (1-mu)^-2 as mu -> 1."""
    for K in (3, 5):
        s = tau_scaling(f"he{K}", eps=(1e-5, 1e-3))
        assert s.alpha0 == pytest.approx(2.0, abs=0.01) and s.alpha1 == pytest.approx(2.0, abs=0.01)
    for K in (2, 4, 6):
        s = tau_scaling(f"he{K}", eps=(1e-5, 1e-3))
        assert abs(s.alpha0) < 0.01 and s.alpha1 == pytest.approx(2.0, abs=0.01)
    lin = tau_scaling("linear", eps=(1e-5, 1e-3))
    assert lin.alpha1 == pytest.approx(2.0, abs=1e-3)
    assert lin.prefactor1 == pytest.approx(1.0, rel=1e-2)


def test_bad_inputs():
    with pytest.raises(LoradynError):
        hermite_coefficients("erf", variance=-1.0)
    with pytest.raises(LoradynError):
        hermite_coefficients("erf", kmax=-1)
    with pytest.raises(LoradynError):
        hermite_coefficients("nope")


@pytest.mark.parametrize("variance", [1e300, 1e-300])
def test_extreme_variance_is_an_error_not_nan(variance):
    """Q^(k/2) overflowing gave c_k = 0 or inf and NaN normalized coefficients."""
    with pytest.raises(LoradynError, match="too far from 1") as exc:
        hermite_coefficients("erf", variance=variance, kmax=10)
    assert "\n" not in str(exc.value)
    h = hermite_coefficients("erf", variance=1e6, kmax=10)  # large but representable
    assert np.all(np.isfinite(h.coeffs)) and np.all(np.isfinite(h.normalized))


def test_variance_accepts_numpy_numbers_and_rejects_text_in_one_line():
    """check_positive: numpy integers are numbers; a string is a LoradynError, not TypeError."""
    a = hermite_coefficients("he3", variance=np.int64(2), kmax=4)
    b = hermite_coefficients("he3", variance=2.0, kmax=4)
    np.testing.assert_array_equal(a.coeffs, b.coeffs)
    with pytest.raises(LoradynError) as exc:
        hermite_coefficients("he3", variance="2", kmax=4)
    assert "\n" not in str(exc.value)
