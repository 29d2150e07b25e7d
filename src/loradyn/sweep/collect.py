"""Merge the results of a sweep into one :class:`xarray.Dataset` indexed by the grid.

Layout of the collected dataset (see docs/sweeps.md):

- One dimension per grid key, in the order of ``[grid]``, with the grid values as
  coordinate (strings stay strings, e.g. ``teacher``), followed by the dimensions of the
  per-task results (``simulate``: ``mu``, ``seed``, ``step``).
- A grid key that the task kind maps onto a per-task dimension (``simulate``: ``mu``,
  ``seed`` and ``seed0`` map onto ``mu``/``seed``) replaces it: each task's dimension of
  length one is dropped, so ``grid.mu`` gives one ``mu`` dimension, not two. If that
  per-task dimension is longer than one (``grid.seed0`` with ``fixed.seeds = 3``), it is
  renamed ``<dim>_index`` (coordinate ``0 .. n-1``) and its original values are kept as
  the coordinate ``<dim>_value`` on the grid dimensions and ``<dim>_index``.
- Per-task coordinates that differ between tasks (``simulate``: ``time = step * lr`` when
  ``lr`` is a grid key) gain the grid dimensions.
- Tasks with different per-task coordinates (e.g. ``steps`` in the grid) are aligned by an
  outer join; the cells a task did not record hold NaN.
- Bookkeeping variables on the grid dimensions: ``task_key`` (the result's hash),
  ``task_status`` (``done`` / ``failed`` / ``pending``), ``task_error`` (one line, empty
  unless failed) and ``config`` (the task's canonical parameters as JSON).
- Cells of failed or pending tasks hold NaN (integer variables become float there),
  ``False`` for booleans and ``""`` for strings; mask with ``task_status == "done"``.
- ``attrs``: ``sweep_name``, ``sweep_kind``, ``sweep_engine``, ``sweep_identity``,
  ``sweep_spec`` (the TOML text), ``config`` (the spec as JSON), ``grid_keys`` (JSON
  list), ``tasks_total``, ``tasks_done``, ``tasks_failed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import LoradynError
from ..params import canonical_json
from .kinds import get_kind
from .store import SPEC_FILE, SweepStore

TASK_DIM = "_task"


def _prepare_task(ds: xr.Dataset, grid_keys: list[str], replaces: dict[str, str]) -> xr.Dataset:
    """Drop or rename the per-task dimensions that grid keys replace; clear attrs."""
    ds = ds.copy(deep=False)
    ds.attrs = {}
    for key in grid_keys:
        dim = replaces.get(key)
        if dim is None or dim not in ds.dims:
            continue
        if ds.sizes[dim] == 1:
            ds = ds.isel({dim: 0}, drop=True)
        else:
            values = ds[dim].values if dim in ds.coords else np.arange(ds.sizes[dim])
            ds = ds.drop_vars(dim, errors="ignore").rename_dims({dim: f"{dim}_index"})
            ds = ds.assign_coords(
                {
                    f"{dim}_index": np.arange(ds.sizes[f"{dim}_index"]),
                    f"{dim}_value": (f"{dim}_index", values),
                }
            )
    for key in grid_keys:
        if key in ds.dims:
            raise LoradynError(
                f"grid key {key!r} collides with a dimension of the task results; "
                "rename it or collect by hand"
            )
        if key in ds.variables:
            ds = ds.rename_vars({key: f"{key}_task"})
    return ds


def _fill_value(var: xr.DataArray) -> Any:
    if var.dtype == bool:
        return False
    if var.dtype.kind in "OUS":
        return ""
    if var.dtype.kind in "iu":  # only when no cell is missing (else cast to float first)
        return 0
    return np.nan


def _coord(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    return np.asarray(values)


def collect(out: str | Path, *, reuse_other_code: bool = False) -> xr.Dataset:
    """Merge every finished task of the sweep in ``out`` into one dataset on the grid.

    Missing (failed or pending) tasks leave NaN cells and are counted in the attributes;
    a result made by other code counts as pending unless ``reuse_other_code``; a corrupt
    result is a one-line error naming it;
    the layout is described in the module docstring.

    Raises
    ------
    LoradynError
        If ``out`` is not a sweep directory or no task has finished yet.
    """
    store = SweepStore.open(out, reuse_other_code=reuse_other_code)
    man = store.manifest
    kind = get_kind(man["kind"])
    grid = [(k, list(v)) for k, v in man["spec"]["grid"]]
    grid_keys = [k for k, _ in grid]
    shape = tuple(len(v) for _, v in grid)
    tasks = store.tasks

    parts: list[xr.Dataset] = []
    done_idx: list[tuple[int, ...]] = []
    status, errors = [], []
    for t in tasks:
        state, reason = store.state(t["key"])
        if state == "corrupt":
            raise LoradynError(f"{reason}: run `loradyn sweep run` on this sweep again to redo it")
        if state == "done":
            parts.append(_prepare_task(store.read_result(t["key"]), grid_keys, dict(kind.replaces)))
            done_idx.append(tuple(t["index"]))
            status.append("done")
            errors.append("")
        elif store.has_error(t["key"]):
            rec = store.read_error(t["key"])
            status.append("failed")
            errors.append(" ".join(f"{rec.get('type', '')}: {rec.get('message', '')}".split()))
        else:
            status.append("pending")
            errors.append(f"result {reason}: rerun the sweep" if state == "stale" else "")
    if not parts:
        raise LoradynError(
            f"no finished task in {str(store.root)!r} yet: run `loradyn sweep run` first"
        )

    merged = xr.concat(
        parts,
        dim=TASK_DIM,
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    merged = merged.assign_coords(
        {k: (TASK_DIM, [values[i[n]] for i in done_idx]) for n, (k, values) in enumerate(grid)}
    )
    if len(parts) < len(tasks):
        # Missing cells hold NaN: integer variables become float (netCDF has no int NaN).
        for name in list(merged.data_vars):
            if merged[name].dtype.kind in "iu":
                merged[name] = merged[name].astype(np.float64)
    fill = {name: _fill_value(merged[name]) for name in merged.data_vars}
    if len(grid_keys) == 1:
        merged = merged.swap_dims({TASK_DIM: grid_keys[0]})
    else:
        merged = merged.set_index({TASK_DIM: grid_keys}).unstack(TASK_DIM, fill_value=fill)
    merged = merged.reindex({k: _coord(v) for k, v in grid}, fill_value=fill)
    merged = merged.transpose(*grid_keys, ...)

    book = {
        "task_key": [t["key"] for t in tasks],
        "task_status": status,
        "task_error": errors,
        "config": [canonical_json(t["params"]) for t in tasks],
    }
    for name, values in book.items():
        arr = np.empty(shape, dtype=object)
        for t, v in zip(tasks, values, strict=True):
            arr[tuple(t["index"])] = v
        merged[name] = (grid_keys, arr.astype(str))

    spec_path = store.root / SPEC_FILE
    n_failed = status.count("failed")
    merged.attrs = {
        "sweep_name": man["name"],
        "sweep_kind": man["kind"],
        "sweep_engine": man["engine"],
        "sweep_identity": man["identity"],
        "sweep_spec": spec_path.read_text(encoding="utf-8") if spec_path.is_file() else "",
        "config": canonical_json(man["spec"]),
        "grid_keys": json.dumps(grid_keys),
        "tasks_total": len(tasks),
        "tasks_done": len(parts),
        "tasks_failed": n_failed,
    }
    return merged


def collect_to_file(
    out: str | Path, path: str | Path, *, reuse_other_code: bool = False
) -> xr.Dataset:
    """:func:`collect` and save the result to ``path`` (netCDF, written atomically).

    Raises :class:`~loradyn.errors.LoradynError` when the folder of ``path`` is missing.
    """
    from ..io import require_folder
    from .store import write_netcdf_atomic

    require_folder(path)
    ds = collect(out, reuse_other_code=reuse_other_code)
    write_netcdf_atomic(ds, path)
    return ds
