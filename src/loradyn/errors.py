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

    arr = np.asarray(mu, dtype=float)
    if arr.size == 0:
        raise LoradynError("mu is empty: give at least one value in [0, 1]")
    if not np.all(np.isfinite(arr)):
        raise LoradynError("mu must be finite numbers in [0, 1]")
    lo = 0.0
    if np.any(arr < lo) or np.any(arr > 1.0) or (not allow_zero and np.any(arr == 0.0)):
        bad = arr[(arr < lo) | (arr > 1.0) | ((arr == 0.0) & (not allow_zero))]
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise LoradynError(f"mu = {bad.ravel()[0]:g} is outside {rng}: choose mu in {rng}")


def check_positive(name: str, value: float, *, strict: bool = True) -> None:
    """Raise :class:`LoradynError` unless ``value`` is positive (non-negative if not strict)."""
    import math
    import numbers

    is_num = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = is_num and math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        word = "positive" if strict else "non-negative"
        raise LoradynError(f"{name} = {value!r} is invalid: {name} must be a {word} number")
