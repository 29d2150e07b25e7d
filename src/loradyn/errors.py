"""User-facing errors.

Every mistake a user can make (unknown activation, ``mu`` outside [0, 1], a negative
learning rate, a run whose every trajectory diverged) raises :class:`LoradynError`
with a one-line message that says what to change. The CLI prints that line and exits
with code 2, without a traceback.
"""

from __future__ import annotations


class LoradynError(ValueError):
    """A user error, reported as one line that says what to change."""

    exit_code: int = 2


class DivergenceError(LoradynError, FloatingPointError):
    """Every trajectory of a run diverged (NaN or overflow)."""


def check_mu(mu: object, *, allow_zero: bool = True) -> None:
    """Raise :class:`LoradynError` unless every ``mu`` lies in [0, 1]."""
    import numpy as np

    if (isinstance(mu, np.ndarray) and mu.dtype == np.float64 and mu.size
            and (mu.min() > 0.0 or (allow_zero and mu.min() == 0.0)) and mu.max() <= 1.0):
        return  # fast path for the library's own calls in hot loops (NaN fails the tests)
    if isinstance(mu, str | bytes) or mu is None:
        raise LoradynError(f"mu = {mu!r} is not a number: give mu in [0, 1] or a list of them")
    try:
        arr = np.asarray(mu, dtype=float)
    except (TypeError, ValueError):
        raise LoradynError(
            f"mu = {mu!r} is not a number: give mu in [0, 1] or a list of them"
        ) from None
    if arr.size == 0:
        raise LoradynError("mu is empty: give at least one value in [0, 1]")
    if not np.all(np.isfinite(arr)):
        raise LoradynError("mu must be finite numbers in [0, 1]")
    lo = 0.0
    if np.any(arr < lo) or np.any(arr > 1.0) or (not allow_zero and np.any(arr == 0.0)):
        bad = arr[(arr < lo) | (arr > 1.0) | ((arr == 0.0) & (not allow_zero))]
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise LoradynError(f"mu = {bad.ravel()[0]:g} is outside {rng}: choose mu in {rng}")


def mu_tuple(mu: object, *, distinct: bool = False,
             shape: str = "a number or a flat list of numbers in [0, 1]") -> tuple[float, ...]:
    """``mu`` (a number or a flat list) as a tuple of floats in [0, 1] (:func:`check_mu`);
    ``distinct`` refuses a repeated value; ``shape`` says what was expected."""
    import numpy as np

    if isinstance(mu, str):
        raise LoradynError(f"mu = {mu!r} is not a number: give {shape}")
    try:
        arr = np.atleast_1d(np.asarray(mu, dtype=float))
    except (TypeError, ValueError):
        raise LoradynError(f"mu = {mu!r} is not a number: give {shape}") from None
    if arr.ndim != 1:
        raise LoradynError(f"mu must be {shape}")
    check_mu(arr)
    if distinct and len(set(arr.tolist())) != arr.size:
        raise LoradynError("mu contains a repeated value: give each mu once")
    return tuple(float(v) for v in arr)


def check_positive(name: str, value: float, *, strict: bool = True) -> None:
    """Raise :class:`LoradynError` unless ``value`` is positive (non-negative if not strict)."""
    import math
    import numbers

    is_num = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = is_num and math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        word = "positive" if strict else "non-negative"
        raise LoradynError(f"{name} = {value!r} is invalid: {name} must be a {word} number")


def _describe(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def as_float(
    name: str, value: object, *, lo: float | None = None, hi: float | None = None,
    lo_open: bool = False, hi_open: bool = False,
) -> float:
    """``value`` as a finite float within the bounds, else :class:`LoradynError`.

    Strings and booleans are refused (a config value of the wrong type is a mistake, not
    something to convert); ``lo_open``/``hi_open`` make a bound strict.
    """
    import math
    import numbers

    rng = _describe(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LoradynError(f"{name} = {value!r} is not a number: give a number {rng}")
    v = float(value)
    if not math.isfinite(v):
        raise LoradynError(f"{name} = {value!r} is not finite: give a number {rng}")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi))):
        raise LoradynError(f"{name} = {v:g} is out of range: give a number {rng}")
    return v


def as_int(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within ``[lo, hi]``, else :class:`LoradynError`.

    Integer-valued floats (``3.0``) are accepted; strings, booleans, ``2.5``, NaN and inf
    are refused.
    """
    import math
    import numbers

    rng = _describe(lo, hi, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LoradynError(f"{name} = {value!r} is not an integer: give an integer {rng}")
    if not isinstance(value, numbers.Integral):
        f = float(value)
        if not (math.isfinite(f) and f.is_integer()):
            raise LoradynError(f"{name} = {value!r} is not an integer: give an integer {rng}")
        value = int(f)
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise LoradynError(f"{name} = {v} is out of range: give an integer {rng}")
    return v


def as_int_tuple(name: str, value: object, *, lo: int | None = None,
                 hi: int | None = None) -> tuple[int, ...]:
    """A list of integers (each checked by :func:`as_int`) as a tuple."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise LoradynError(f"{name} must be a list of integers, got {value!r}")
    return tuple(as_int(f"{name}[{i}]", v, lo=lo, hi=hi) for i, v in enumerate(value))
