"""Rich rendering of the library's progress callbacks (:mod:`loradyn.progress`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ..progress import Progress, silent


@contextlib.contextmanager
def rich_bar(title: str, enabled: bool = True, transient: bool = False) -> Iterator[Progress]:
    """Yield a ``progress(fraction, message)`` callback drawn as one rich bar on stderr.

    With ``enabled`` false, or when stderr is not a terminal, yield a silent callback.
    """
    if not enabled or not sys.stderr.isatty():
        yield silent
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=transient,
    ) as bar:
        task = bar.add_task("", total=1.0)

        def report(fraction: float, message: str = "") -> None:
            bar.update(task, completed=min(max(float(fraction), 0.0), 1.0),
                       description=message)

        yield report
