"""Reproduction of the paper's figures, claims table and HTML report (``loradyn reproduce``).

Figure modules ``figN``/``tableN`` of this package register themselves with
:func:`loradyn.reproduce.registry.register`; :func:`reproduce` discovers, runs and reports
them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["reproduce", "ReproduceResult"]


def __getattr__(name: str) -> Any:  # lazy, so that importing a figure module stays cheap
    if name in ("reproduce", "ReproduceResult"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
