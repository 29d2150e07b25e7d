"""The two-layer LoRA model of App. K: ``K`` teacher neurons, alignments ``mu_k``, rank ``r``.

- :mod:`.model`: :class:`TwoLayerConfig`, :class:`State`, exact initial laws (Bartlett).
- :mod:`.population`: closed-form loss (linear, he2-norm), gradients, ODE right-hand side.
- :mod:`.linearization`: search-phase escape rate and time per rank.
- :mod:`.engines`: ``dense``, ``reduced`` (Gram + Wishart, cost independent of ``d``), ``ode``.
"""

from .engines import plot_loss, record_steps, run, save, simulate, summary
from .linearization import (
    TwoLayerTau,
    collective_rate,
    exit_time,
    jacobian,
    linear_exit_time,
    search_rate,
    tau,
)
from .model import State, TwoLayerConfig, initial_state
from .population import closed_loss, flow, loss, monte_carlo_loss, quadrature_loss

__all__ = [
    "State", "TwoLayerConfig", "TwoLayerTau", "closed_loss", "collective_rate", "exit_time",
    "flow", "initial_state", "jacobian", "linear_exit_time", "loss", "monte_carlo_loss",
    "quadrature_loss",
    "plot_loss", "record_steps", "run", "save", "search_rate", "simulate", "summary", "tau",
]
