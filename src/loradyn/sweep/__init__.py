"""Declarative, resumable, Dask-distributed parameter sweeps.

A sweep file (TOML) names a grid of parameters; every point of the grid is one task, run
on a Dask cluster, stored atomically under a hash of its configuration and skipped when
the sweep is run again. See docs/sweeps.md.

Python API (the CLI ``loradyn sweep run|status|collect`` calls these):

- :func:`load_spec` / :func:`parse_spec`: read and validate a sweep;
- :func:`run_sweep`: run the unfinished tasks on a ``LocalCluster`` or a scheduler;
- :func:`sweep_status`: tasks done, failed (with errors) and pending;
- :func:`collect`: merge the results into one :class:`xarray.Dataset` on the grid;
- :func:`register_kind`: add a kind of task (what one grid point computes).
"""

from __future__ import annotations

from .collect import collect, collect_to_file
from .kinds import TaskKind, available_kinds, get_kind, register_kind
from .runner import run_sweep
from .spec import SweepSpec, Task, load_spec, parse_spec, spec_from_dict, task_key
from .store import FailedTask, SweepStatus, SweepStore, sweep_status, write_netcdf_atomic

__all__ = [
    "FailedTask",
    "SweepSpec",
    "SweepStatus",
    "SweepStore",
    "Task",
    "TaskKind",
    "available_kinds",
    "collect",
    "collect_to_file",
    "get_kind",
    "load_spec",
    "parse_spec",
    "register_kind",
    "run_sweep",
    "spec_from_dict",
    "sweep_status",
    "task_key",
    "write_netcdf_atomic",
]
