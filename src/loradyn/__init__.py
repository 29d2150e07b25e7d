"""loradyn: the dynamics of LoRA fine-tuning in single-index models.

The main entry points are available from the top-level package and are imported lazily,
so ``import loradyn`` stays fast::

    import loradyn as ld
    ld.tau("erf", [0.1, 0.5, 0.9]).tau                     # exact search-phase time
    ld.singularities("he3")                                # where tau diverges
    ds = ld.simulate(ld.RunConfig(teacher="erf", mu=[0.2, 0.8], steps=3000, seeds=3))

Names that are also module names (``loradyn.population``, ``loradyn.reproduce``) are not
re-exported: import their functions from the module, e.g.
``from loradyn.reproduce import reproduce``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LoradynError": "loradyn.errors",
    "get_activation": "loradyn.activations",
    "register_activation": "loradyn.activations",
    "make_problem": "loradyn.population",
    "flow": "loradyn.population",
    "coefficients": "loradyn.linearization",
    "tau": "loradyn.linearization",
    "singularities": "loradyn.linearization",
    "exit_time": "loradyn.linearization",
    "escape_distribution": "loradyn.escape",
    "RunConfig": "loradyn.config",
    "simulate": "loradyn.engines",
    "run_sweep": "loradyn.sweep",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loradyn' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
