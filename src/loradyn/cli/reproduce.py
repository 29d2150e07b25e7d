"""CLI command ``loradyn reproduce``: every figure, the claims table and the HTML report."""

from __future__ import annotations

import typer

from ._app import app


@app.command("reproduce")
def reproduce_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (figures/, data/, index.html)."),
    scale: str = typer.Option("quick", "--scale", help="quick (minutes) or paper (paper sizes)."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated ids, e.g. fig1,fig2."),
    engine: str = typer.Option("reduced", "--engine", help="Simulation engine: reduced or dense."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the simulations."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress display."),
    workers: int | None = typer.Option(
        None, "--workers", help="Run the simulations on a local Dask cluster of N processes."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Run the simulations on the Dask scheduler at ADDRESS."
    ),
    store: str | None = typer.Option(
        None, "--store", help="Result store of the simulations (default OUT/data; a sweep "
        "directory shares its results)."
    ),
    reuse_other_code: bool = typer.Option(
        False, "--reuse-other-code",
        help="Serve stored results made by another version of the number-computing code.",
    ),
    from_data: str | None = typer.Option(
        None, "--from-data", help="Rebuild figures, claims and report from the stored "
        "simulations of the reproduction in DIR (DIR/data), simulating nothing."
    ),
) -> None:
    """Reproduce the paper's figures into OUT: PNG/PDF, data, claims.csv and index.html."""
    from ..errors import LoradynError
    from ..reproduce.runner import (
        ENGINES,
        SCALES,
        check_seed,
        discover,
        expected_seconds,
        parse_only,
        prepare_out,
        reproduce,
    )

    if scale not in SCALES:
        raise LoradynError(f"unknown scale {scale!r}: choose quick or paper")
    if engine not in ENGINES:
        raise LoradynError(f"unknown engine {engine!r}: choose reduced or dense")

    check_seed(seed)
    from ..sweep.runner import check_workers

    check_workers(workers)  # before anything is written
    ids = parse_only(only, extra=discover())
    prepare_out(out)
    est = expected_seconds(scale, ids)
    if est:
        when = f"about {est / 60:.0f} min" if est >= 120 else f"about {est:.0f} s"
        typer.echo(f"loradyn reproduce --scale {scale}: expected run time {when} on an idle "
                   "2-core machine (figures with an estimate)", err=True)
    from ._progress import rich_bar

    with rich_bar("reproduce", enabled=not no_progress) as bar:
        res = reproduce(out, scale=scale, only=ids, engine=engine, progress=bar, seed=seed,
                        workers=workers, scheduler=scheduler, store=store,
                        reuse_other_code=reuse_other_code, from_data=from_data)
    from ..reproduce.claims import summary, summary_text

    typer.echo(
        f"{len(res.done)} made, {len(res.pending)} pending, {len(res.failed)} failed in "
        f"{res.seconds:.0f} s; claims: {summary_text(summary(res.claims))}"
    )
    for item in res.pending:
        typer.echo(f"pending: {item.id} ({item.reason})")
    for item in res.failed:
        typer.echo(f"failed: {item.id}: {item.reason} (see {res.out / (item.id + '.error.txt')})")
    typer.echo(f"report: {res.report}")
    if res.failed:
        raise typer.Exit(1)
