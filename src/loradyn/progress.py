"""The one progress interface of the library: a callback ``progress(fraction, message)``.

Every long computation (an engine run, a sweep, a reproduction, a ViT fine-tune) takes an
optional callback ``progress(fraction, message="")`` with ``fraction`` in [0, 1] and
calls it as it advances. The library never draws a bar: the CLI renders the callbacks
with rich (:mod:`loradyn.cli._progress`); a script passes its own function or nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[..., None]
"""``progress(fraction: float, message: str = "") -> None``."""

__all__ = ["Progress", "as_callback", "silent", "span", "text_lines"]


def silent(fraction: float, message: str = "") -> None:
    """A progress callback that does nothing."""


def text_lines(stream=None) -> Progress:  # noqa: ANN001 - a text stream
    """A callback that writes each new message as one plain line (default: stderr)."""
    last: list[str] = [""]

    def report(fraction: float, message: str = "") -> None:
        if message and message != last[0]:
            last[0] = message
            print(f"[{100 * float(fraction):3.0f}%] {message}", file=stream or sys.stderr)

    return report


def as_callback(progress: bool | Progress | None) -> Progress:
    """``None``/``False``: :func:`silent`; ``True``: :func:`text_lines`; a callable: itself."""
    if progress is None or progress is False:
        return silent
    if progress is True:
        return text_lines()
    if not callable(progress):
        raise TypeError("progress must be a callable progress(fraction, message) or a bool")
    return progress


def span(progress: Progress, lo: float, hi: float, prefix: str = "") -> Progress:
    """A callback mapping [0, 1] onto [lo, hi] of ``progress`` (messages prefixed)."""

    def report(fraction: float, message: str = "") -> None:
        progress(lo + (hi - lo) * float(fraction), f"{prefix}{message}")

    return report
