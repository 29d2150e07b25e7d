"""CLI commands ``loradyn sweep run|status|collect`` (a thin layer over :mod:`loradyn.sweep`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

sweep_app = typer.Typer(
    name="sweep",
    help="Declarative, resumable parameter sweeps on Dask (see docs/sweeps.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sweep_app, name="sweep")


def _print_status(status) -> None:  # noqa: ANN001 - SweepStatus, imported lazily
    typer.echo(status.summary())
    for c in status.corrupt:
        typer.echo(f"corrupt: {c.key}  {c.label()}: {c.error}")
    if status.failed:
        typer.echo("failed tasks:")
        for f in status.failed:
            typer.echo(f"  {f.key}  {f.label()}: {f.error}")


@sweep_app.command("run")
def run_cmd(
    spec: Path = typer.Argument(..., help="Sweep file (TOML) with [sweep], [grid], [fixed]."),
    out: str = typer.Option(..., "--out", help="Sweep directory (created; reruns resume it)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes of a local Dask cluster (default: CPUs)."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Address of a running Dask scheduler, e.g. tcp://host:8786."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Run again the tasks that failed in an earlier run."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    reuse_other_code: bool = typer.Option(
        False, "--reuse-other-code",
        help="Keep results made by another version of the number-computing code.",
    ),
) -> None:
    """Run every unfinished task of SPEC; exit code 1 if some task failed."""
    from ..errors import LoradynError
    from ..sweep import run_sweep
    from ._progress import rich_bar

    if not out.strip():
        raise LoradynError("--out is empty: give the sweep directory")

    with rich_bar("sweep", enabled=not no_progress) as bar:
        status = run_sweep(
            spec, out, workers=workers, scheduler=scheduler, retry_failed=retry_failed,
            progress=bar, reuse_other_code=reuse_other_code,
        )
    _print_status(status)
    if status.failed:
        raise typer.Exit(1)


@sweep_app.command("status")
def status_cmd(
    out: Path = typer.Argument(..., help="Sweep directory."),
) -> None:
    """Print `done N of M` and the failed tasks with their error."""
    from ..sweep import sweep_status

    _print_status(sweep_status(out))


@sweep_app.command("collect")
def collect_cmd(
    directory: Path = typer.Argument(..., help="Sweep directory."),
    out: Path = typer.Option(..., "--out", help="netCDF file to write (e.g. sweep.nc)."),
    reuse_other_code: bool = typer.Option(
        False, "--reuse-other-code",
        help="Use results made by another version of the number-computing code.",
    ),
) -> None:
    """Merge the finished results into one netCDF dataset indexed by the grid."""
    from ..errors import LoradynError
    from ..io import check_output_file
    from ..sweep import collect_to_file

    check_output_file(out, "--out")
    if Path(out).resolve().is_relative_to(Path(directory).resolve()):
        raise LoradynError(f"--out {out} is inside the sweep directory {directory}: write the "
                           "collected file elsewhere (it would overwrite the sweep's own files)")
    ds = collect_to_file(directory, out, reuse_other_code=reuse_other_code)
    total = int(ds.attrs["tasks_total"])
    done = int(ds.attrs["tasks_done"])
    dims = ", ".join(f"{k}={v}" for k, v in ds.sizes.items())
    typer.echo(f"collected {done} of {total} tasks into {out} ({dims})")
    if done < total:
        typer.echo(f"{total - done} cells are empty (failed or pending): see task_status")
