"""CLI of the ViT LoRA transfer experiments: ``loradyn vit run|pretrain|finetune|table``.

Each command parses its options and calls one function of :mod:`loradyn.vit`; torch is
imported only when a command runs, so ``loradyn --help`` stays fast without the extra.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer

from ..errors import LoradynError
from ._app import app

vit_app = typer.Typer(
    name="vit",
    help="ViT LoRA transfer experiments (paper Table 1, App. J): pre-train, fine-tune, table.",
    no_args_is_help=True,
)
app.add_typer(vit_app, name="vit")

PRESET = typer.Option("digits-shifted", "--preset", "-p",
                      help="digits-shifted (offline, CPU), emnist-fashion, cifar10-svhn, "
                           "emnist-shifted (GPU)")
SCALE = typer.Option("quick", "--scale", help="smoke | quick | paper")
CONFIG = typer.Option(None, "--config", help="JSON experiment config (overrides --preset)")
OUT = typer.Option(..., "--out", "-o", help="run directory (resumable)")
DATA = typer.Option(None, "--data-dir", help="dataset root (default $LORADYN_DATA or "
                                             "~/.cache/loradyn/data)")
DOWNLOAD = typer.Option(False, "--download", help="let torchvision download missing datasets")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
AMP = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on with cuda)")
THREADS = typer.Option(0, "--threads",
                       help="torch CPU threads (0: automatic, 1 on a CPU; see docs/vit.md)")
REUSE = typer.Option(False, "--reuse-other-code",
                     help="Serve stored results (pre-trainings, fine-tunes) made by another "
                          "version of the number-computing code instead of recomputing them.")


def _requires_torch() -> None:
    try:
        import peft  # noqa: F401
        import timm  # noqa: F401
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise LoradynError(
            f"the vit commands need the 'vit' extra ({exc.name} is missing): "
            "pip install 'loradyn[vit]'"
        ) from None


def _config(preset: str, scale: str, config: Path | None, seeds: str | None):
    from ..vit.config import ExperimentConfig
    from ..vit.presets import get_preset

    if config is not None:
        try:
            cfg = ExperimentConfig.from_dict(json.loads(Path(config).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise LoradynError(f"cannot read --config {config}: {exc}") from None
    else:
        cfg = get_preset(preset, scale)
    if seeds is not None:
        cfg = cfg.with_seeds(_ints(seeds, "--seeds"))
    return cfg


def _out_dir(out: str) -> Path:
    """``--out`` as a Path; an empty one (which would mean the current folder) is an error."""
    if not str(out).strip():
        raise LoradynError("--out is empty: give the run directory")
    return Path(out)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise LoradynError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise LoradynError(f"{what} is empty: give comma-separated integers, e.g. 0,1,2")
    return vals


@contextlib.contextmanager
def _warning_lines() -> Iterator[None]:
    """Print each healed-file warning as one ``warning: ...`` line on stderr (also when the
    body fails)."""
    from ..vit.rundir import CorruptFileWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptFileWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, CorruptFileWarning):
                    print(f"warning: {' '.join(str(w.message).split())}", file=sys.stderr)


@contextlib.contextmanager
def _bar(label: str, threads: int) -> Iterator:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if not 0 <= threads <= 4096:
        raise LoradynError(f"--threads must be in [0, 4096] (0: automatic), got {threads}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  TextColumn("{task.fields[msg]}"), transient=False) as prog:
        task = prog.add_task(label, total=1.0, msg="")
        # show the library's INFO lines (e.g. the trainable-parameter check) above the bar
        import logging

        from rich.logging import RichHandler

        logger = logging.getLogger("loradyn.vit")
        handler = RichHandler(console=prog.console, show_time=False, show_path=False)
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)

        def update(fraction: float, message: str = "") -> None:
            prog.update(task, completed=fraction, msg=message)

        try:
            with _warning_lines():
                yield update
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)


@vit_app.command("run")
def run_cmd(
    preset: str = PRESET, scale: str = SCALE, config: Path = CONFIG,
    seeds: str = typer.Option(None, "--seeds", help="comma-separated seeds, e.g. 0,1,2"),
    out: str = OUT, data_dir: Path = DATA, download: bool = DOWNLOAD, device: str = DEVICE,
    amp: bool = AMP, threads: int = THREADS, reuse_other_code: bool = REUSE,
) -> None:
    """Whole protocol: pre-training, checkpoints, every (checkpoint, seed) LoRA fine-tune,
    DIR/table.csv and DIR/figure.png. A rerun skips finished work."""
    _requires_torch()
    out = _out_dir(out)
    from ..vit.train import run_experiment

    cfg = _config(preset, scale, config, seeds)
    with _bar(f"vit {cfg.name} ({cfg.scale})", threads) as update:
        res = run_experiment(cfg, out, data_dir=data_dir, download=download, device=device,
                             amp=amp, progress=update, threads=threads,
                             reuse_other_code=reuse_other_code)
    typer.echo(res.table.read_text().rstrip())
    typer.echo(f"table: {res.table}")
    if res.figure:
        typer.echo(f"figure: {res.figure}")


@vit_app.command("pretrain")
def pretrain_cmd(
    preset: str = PRESET, scale: str = SCALE, config: Path = CONFIG,
    seed: int = typer.Option(None, "--seed", help="pre-training seed (default: the config's)"),
    out: str = OUT, data_dir: Path = DATA, download: bool = DOWNLOAD, device: str = DEVICE,
    amp: bool = AMP, threads: int = THREADS, reuse_other_code: bool = REUSE,
) -> None:
    """Pre-train on the source task and save the checkpoints (resumable)."""
    _requires_torch()
    out = _out_dir(out)
    from ..vit.rundir import pretrain_dir
    from ..vit.train import pretrain, torch_threads

    cfg = _config(preset, scale, config, None)
    with _bar(f"pretrain {cfg.name}", threads) as update, torch_threads(threads, device):
        ds = pretrain(cfg, out, seed, data_dir=data_dir, download=download, device=device,
                      amp=amp, progress=update, reuse_other_code=reuse_other_code)
    p = int(ds.attrs["pretrain_seed"])
    for c in cfg.pretrain.checkpoints:
        acc = 100 * float(ds["test_acc"].sel(epoch=c))
        typer.echo(f"checkpoint {c:03d}: source test accuracy {acc:.2f}%")
    typer.echo(f"checkpoints: {pretrain_dir(out, p)}")


@vit_app.command("finetune")
def finetune_cmd(
    preset: str = PRESET, scale: str = SCALE, config: Path = CONFIG,
    checkpoints: str = typer.Option(None, "--checkpoints", help="e.g. 2,5 (default: all)"),
    seeds: str = typer.Option(None, "--seeds", help="e.g. 0,1,2 (default: the config's)"),
    out: str = OUT, data_dir: Path = DATA, download: bool = DOWNLOAD, device: str = DEVICE,
    amp: bool = AMP, threads: int = THREADS, reuse_other_code: bool = REUSE,
) -> None:
    """LoRA fine-tune the given (checkpoint, seed) pairs (resumable, skips finished ones)."""
    _requires_torch()
    out = _out_dir(out)
    from ..vit.train import finetune_all, torch_threads

    cfg = _config(preset, scale, config, None)
    cks = _ints(checkpoints, "--checkpoints") if checkpoints is not None else None
    sds = _ints(seeds, "--seeds") if seeds is not None else None
    with _bar(f"finetune {cfg.name}", threads) as update, torch_threads(threads, device):
        paths = finetune_all(cfg, out, cks, sds, data_dir=data_dir, download=download,
                             device=device, amp=amp, progress=update,
                             reuse_other_code=reuse_other_code)
    for p in paths:
        typer.echo(str(p))


@vit_app.command("table")
def table_cmd(
    out: str = OUT,
    seeds: str = typer.Option(None, "--seeds",
                              help="seeds to average (default: all stored or finished)"),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="summarize finished fine-tunes only"),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="also draw DIR/figure.png"),
    reuse_other_code: bool = typer.Option(
        False, "--reuse-other-code",
        help="Use fine-tune results made by another version of the number-computing code "
             "(by default they count as unfinished)."),
) -> None:
    """Write DIR/table.csv (and DIR/figure.png) from the finished runs in DIR (no torch)."""
    out = _out_dir(out)
    from ..vit.figures import plot_run
    from ..vit.table import write_table

    sds = _ints(seeds, "--seeds") if seeds is not None else None
    with _warning_lines():
        path, _ = write_table(out, sds, allow_missing, reuse_other_code=reuse_other_code)
    typer.echo(path.read_text().rstrip())
    typer.echo(f"table: {path}")
    if figure:
        with _warning_lines():
            fig = plot_run(out, sds, allow_missing=allow_missing,
                           reuse_other_code=reuse_other_code)
        typer.echo(f"figure: {fig}")
