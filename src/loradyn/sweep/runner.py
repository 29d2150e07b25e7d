"""Run a sweep's tasks on Dask, resumably.

:func:`run_sweep` validates the spec, expands it into tasks, opens (or creates) the sweep
directory and submits every task that has no result yet to a Dask cluster: a
``LocalCluster`` with ``workers`` worker processes (one thread each) or an existing
scheduler at ``scheduler`` (``tcp://host:8786``; see docs/sweeps.md for SLURM).

Workers compute; results travel back to the process that runs the sweep, which is the
only writer of the directory and stores each one atomically as soon as it arrives
(:mod:`loradyn.sweep.store`). Workers therefore need no shared file system, and killing
the run at any moment (``kill -9`` included) loses at most the tasks in flight: rerunning
the same command skips every stored result and runs the rest.

A task that raises (a diverging run, an invalid combination of parameters, a lost worker)
is recorded as ``KEY.error.json`` and does not stop the others. A rerun does not retry
failed tasks unless ``retry_failed=True`` (``--retry-failed``): a deterministic failure
would fail again, and retrying is a decision the user should make.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import LoradynError
from ..progress import as_callback
from .kinds import TaskKind
from .spec import SweepSpec, Task, load_spec
from .store import SweepStatus, SweepStore

log = logging.getLogger(__name__)


def execute_task(
    run: Any, params: dict[str, Any], engine: str, client_code: str | None = None,
    threads: int | None = 1,
) -> tuple[str, Any]:
    """Run one task where Dask placed it; never raises.

    Returns ``("ok", dataset)`` or ``("error", record)`` with the exception's type,
    message and traceback, so that a failure travels back as data and is recorded.
    A worker whose :func:`loradyn.store.code_hash` differs from ``client_code`` (the
    client's) refuses to run: its numbers would not be those of the client's code.
    ``threads`` pins torch's thread count (when torch is loaded) so that results do not
    depend on the machine.
    """
    from ..store import code_hash

    if client_code is not None and code_hash() != client_code:
        return "error", {
            "type": "CodeMismatch",
            "message": f"worker code hash {code_hash()} differs from the client's "
            f"{client_code}: install the same loradyn on every worker",
            "traceback": "",
        }
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        ds = run(params, engine)
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"task function returned {type(ds).__name__}, not xarray.Dataset")
        return "ok", ds.load()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the sweep
        return "error", {
            "type": type(exc).__name__,
            "message": " ".join(str(exc).split()) or type(exc).__name__,
            "traceback": traceback.format_exc(),
        }


def run_checked(run: Any, params: dict[str, Any], engine: str, client_code: str,
                threads: int | None = 1) -> Any:
    """Run one task where Dask placed it and return its dataset; exceptions propagate.

    Refuses (``LoradynError``) when this worker's :func:`loradyn.store.code_hash` differs
    from ``client_code``; pins torch's thread count like :func:`execute_task`.
    """
    from ..store import code_hash

    if code_hash() != client_code:
        raise LoradynError(f"worker code hash {code_hash()} differs from the client's "
                           f"{client_code}: install the same loradyn on every worker")
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = run(params, engine)
    return ds.load() if isinstance(ds, xr.Dataset) else ds


def _error_record(task: Task, info: Mapping[str, Any], spec: SweepSpec) -> dict[str, Any]:
    return {
        **info,
        "key": task.key,
        "point": task.point,
        "params": task.params,
        "kind": spec.kind,
        "engine": spec.engine,
    }


def _check_address(scheduler: str) -> None:
    """Reject a malformed tcp/tls scheduler address before any Client is built.

    A ``Client`` whose constructor raises leaves dask's global state behind (scheduler
    config, event loop), so the address is parsed first: ``foo`` or ``tcp://host:x`` is a
    one-line user error instead of a ``ValueError`` traceback.
    """
    from distributed.comm.addressing import get_address_host_port, parse_address

    try:
        scheme, _ = parse_address(scheduler)
        if scheme not in ("tcp", "tls"):
            raise ValueError(f"{scheme}:// is not a network address"
                             + (" (inproc:// lives inside one Python process)"
                                if scheme == "inproc" else ""))
        get_address_host_port(scheduler)
    except (ValueError, TypeError) as exc:
        msg = " ".join(str(exc).split())
        raise LoradynError(
            f"cannot connect to the Dask scheduler at {scheduler!r}: {msg} "
            "(give an address like tcp://host:8786)"
        ) from None


CONNECT_TIMEOUT = "10s"
"""How long ``sweep run --scheduler`` waits for the scheduler before a one-line error."""


def max_local_workers() -> int:
    """The most local worker processes ``--workers`` may ask for: 4 per CPU, at least 32."""
    return max(32, 4 * (os.cpu_count() or 1))


def check_workers(workers: object) -> None:
    """Raise :class:`LoradynError` unless ``workers`` is None or a positive integer of at most
    :func:`max_local_workers` (each is a process: a huge count would exhaust the memory)."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LoradynError(f"--workers = {workers!r} is invalid: give a positive integer")
    top = max_local_workers()
    if workers > top:
        raise LoradynError(f"--workers = {workers} is too many local processes: give at most "
                           f"{top} (4 per CPU), or --scheduler for a cluster")


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None, n_tasks: int) -> Iterator[Any]:
    """A Dask ``Client``: to the scheduler at ``scheduler``, or to a new ``LocalCluster`` of
    ``workers`` processes (one thread each; default: the CPUs, at most ``n_tasks``).

    Used by sweeps and by ``loradyn reproduce --workers/--scheduler``.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is an optional extra
        raise LoradynError(
            "sweeps need dask.distributed: pip install 'loradyn[dist]'"
        ) from exc
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            _check_address(scheduler)
            import dask

            saved = copy.deepcopy(dask.config.config)
            try:
                # never the process-wide default client: a failed one would stay registered
                # and xarray's netCDF writes would then wait on its dead scheduler's lock
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT,
                                                    set_as_default=False))
            except (OSError, TimeoutError, MemoryError, ValueError, TypeError,
                    EOFError) as exc:
                # a failed Client leaves its config behind: restore dask's as it was. A
                # service that is not a Dask scheduler answers with bytes that read as a
                # huge frame length (MemoryError) or a protocol error
                dask.config.config.clear()
                dask.config.config.update(saved)
                why = " ".join(str(exc).split())[:200] or type(exc).__name__
                if isinstance(exc, MemoryError):
                    why = "it does not speak the Dask protocol"
                raise LoradynError(
                    f"cannot connect to the Dask scheduler at {scheduler!r}: {why} "
                    f"(timeout {CONNECT_TIMEOUT}); check the address and that the scheduler "
                    "runs"
                ) from None
        else:
            check_workers(workers)
            n = workers if workers is not None else min(os.cpu_count() or 1, n_tasks)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=max(1, n),
                    host="127.0.0.1",
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    # no dashboard; the scheduler's small HTTP service (health, metrics),
                    # which distributed always starts, on a free loopback port instead of
                    # 8787 (no "port already in use" warning, nothing on other interfaces)
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        yield client


_client = dask_client  # the former private name


def run_sweep(
    spec_or_path: SweepSpec | Mapping[str, Any] | str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    retry_failed: bool = False,
    progress: bool | Callable[[float, str], None] = False,
    reuse_other_code: bool = False,
) -> SweepStatus:
    """Run every unfinished task of a sweep and store the results in ``out``.

    Parameters
    ----------
    spec_or_path
        A :class:`SweepSpec`, the parsed TOML as a dict, or the path of a sweep file.
    out
        Sweep directory; created if missing. Must be empty, or hold this same sweep.
    workers
        Number of worker processes of a new ``LocalCluster`` (one thread each); default:
        the number of CPUs, at most the number of tasks to run.
    scheduler
        Address of an existing Dask scheduler; excludes ``workers``.
    retry_failed
        Run again the tasks recorded as failed by an earlier run.
    progress
        A callback ``progress(fraction, message)`` (:mod:`loradyn.progress`), called after
        every finished task; ``True`` prints one plain line per task on stderr.
    reuse_other_code
        Keep results made by other code (another :func:`loradyn.store.code_hash`)
        instead of recomputing them.

    Returns
    -------
    SweepStatus
        Tasks done, failed (with their errors) and pending after the run.
    """
    if workers is not None and scheduler is not None:
        raise LoradynError("give either --workers or --scheduler, not both")
    if scheduler is not None:
        _check_address(scheduler)  # a malformed address is refused even with nothing to run
    check_workers(workers)
    try:
        spec = load_spec(spec_or_path)
    except OSError as exc:  # a folder, a path below a file, no permission
        raise LoradynError(f"cannot read the sweep file {spec_or_path}: "
                           f"{exc.strerror or exc}") from None
    if not isinstance(out, str | os.PathLike):
        raise LoradynError(f"the sweep directory must be a path, not {type(out).__name__}")
    kind = spec.task_kind()
    tasks = spec.tasks()
    if all(t.error for t in tasks):
        t = tasks[0]
        raise LoradynError(f"every task of the sweep is invalid, e.g. {t.label()}: {t.error}")
    with contextlib.ExitStack() as stack:
        # a new sweep connects first: nothing is written to ``out`` before the scheduler
        # answers (a rerun of a finished sweep needs no scheduler: it connects only if
        # some task is pending)
        fresh = not Path(out).exists() or (Path(out).is_dir() and not any(Path(out).iterdir()))
        client = (stack.enter_context(dask_client(None, scheduler, len(tasks)))
                  if scheduler is not None and fresh else None)
        try:
            store = SweepStore.prepare(out, spec, tasks, reuse_other_code=reuse_other_code)
        except OSError as exc:
            raise LoradynError(f"cannot create the sweep directory {out}: "
                               f"{exc.strerror or exc}; choose another --out") from None
        with store.lock("loradyn sweep run"):
            store.clean_temporaries()
            _run_pending(store, spec, kind, tasks, workers, scheduler, retry_failed, progress,
                         client)
    return store.status()


def _run_pending(
    store: SweepStore,
    spec: SweepSpec,
    kind: TaskKind,
    tasks: list[Task],
    workers: int | None,
    scheduler: str | None,
    retry_failed: bool,
    progress: bool,
    connected: Any = None,
) -> None:
    """Record invalid tasks, then run the unfinished valid ones and store each result.

    A corrupt result is moved aside (one warning line naming it) and redone; a result of
    other code is recomputed (unless the store reuses it).
    """
    states = {t.key: store.state(t.key) for t in tasks}
    for t in tasks:
        state, reason = states[t.key]
        if state == "corrupt":
            store.quarantine(t.key, reason)
    stale = sum(1 for state, _ in states.values() if state == "stale")
    if stale:
        store.warn(f"{stale} result(s) in {store.root} were made by other number-computing code: "
                   "recomputing them (--reuse-other-code keeps them)")
    for t in tasks:
        done = states[t.key][0] == "done"
        if t.error and not done and (retry_failed or not store.has_error(t.key)):
            info = {"type": "LoradynError", "message": t.error, "traceback": ""}
            store.write_error(t.key, _error_record(t, info, spec))

    pending = [
        t
        for t in tasks
        if t.error is None
        and states[t.key][0] != "done"
        and (retry_failed or not store.has_error(t.key))
    ]
    if not pending:
        return

    from ..store import code_hash

    report = as_callback(progress)
    n_done = sum(1 for t in tasks if states[t.key][0] == "done")
    n_failed = sum(1 for t in tasks if states[t.key][0] != "done" and t not in pending
                   and store.has_error(t.key))
    total = len(tasks)
    with (contextlib.nullcontext(connected) if connected is not None
          else dask_client(workers, scheduler, len(pending))) as client:
        from dask.distributed import as_completed

        here = code_hash()
        futures = {
            client.submit(
                execute_task, kind.run, t.params, spec.engine, here, key=f"loradyn-{t.key}"
            ): t
            for t in pending
        }
        for fut in as_completed(futures, loop=client.loop):  # client is not the default
            task = futures.pop(fut)
            try:
                status, payload = fut.result()
            except Exception as exc:  # noqa: BLE001 - lost worker, cancelled, unpicklable
                status, payload = "error", {
                    "type": type(exc).__name__,
                    "message": " ".join(str(exc).split()) or type(exc).__name__,
                    "traceback": traceback.format_exc(),
                }
            fut.release()
            if status == "ok":
                store.write_result(task.key, payload)
                n_done += 1
            else:
                n_failed += 1
                store.write_error(task.key, _error_record(task, payload, spec))
                log.info("task %s (%s) failed: %s", task.key, task.label(), payload["message"])
            report((n_done + n_failed) / total,
                   f"sweep {spec.name}: {n_done} done, {n_failed} failed of {total}")
