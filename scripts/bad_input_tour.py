"""An adversarial tour of every CLI command: bad values for every option, counted.

    python scripts/bad_input_tour.py              # every case, summary + the unclean ones
    python scripts/bad_input_tour.py --fast       # only the fast commands (no sweep/vit)
    python scripts/bad_input_tour.py -k simulate  # only cases whose label contains this

For every option of every command (read from the Typer app itself, so new options are
covered automatically) the tour starts from a small valid invocation and tries: the option
missing (when required), empty, a wrong type, NaN, +-inf, negative, zero, huge, and for
file options a directory, a path below a file, an unwritable place and a path colliding
with another output. Each case runs in-process through :func:`loradyn.cli.main` with a
time limit.

A case is *clean* when it ends without a traceback and within the time limit, and either
succeeds (exit 0) or fails with exit 2 and exactly one stderr line starting with
``error:``. Values that can never be valid (empty, a wrong type, NaN, inf for a number)
must fail that way; succeeding with them is unclean. A case that outlives its limit is
unclean (a hang) unless marked ``long`` (a legitimately huge request such as 1e12 steps).

tests/test_bad_input.py runs the fast subset (``cases(..., fast=True)``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NUMBER_BAD = ("", "abc", "nan", "inf", "-inf")  # never a valid number
NUMBER_ODD = ("-1", "0", "1e300", "1000000000000")  # may be valid; must not crash or hang
TEXT_BAD = ("", " ", "nosuch")  # never a valid name/choice (checked only for choice options)

SMALL_SWEEP = """
[sweep]
name = "tour"
engine = "reduced"

[grid]
mu = [0.3, 0.7]

[fixed]
teacher = "linear"
d = 40
lr = 0.1
batch = 10
steps = 30
"""

# free-text options that accept almost anything (paths, names, comma lists)
PATH_OPTIONS = {"out", "plot", "config", "data_dir", "spec", "directory"}
# options whose every value is a name from a list
CHOICE_OPTIONS = {"teacher", "student", "label", "loss", "units", "fmt", "engine", "update",
                  "backend", "switch_label", "activation", "norm", "scale", "preset", "device",
                  "only"}


@dataclass
class Case:
    label: str
    argv: list[str]
    must_fail: bool = False
    long_ok: bool = False
    limit: float = 30.0
    setup: list = field(default_factory=list)


@dataclass
class Outcome:
    case: Case
    rc: int | None
    out: str
    err: str
    exc: str | None
    seconds: float
    timed_out: bool

    @property
    def clean(self) -> bool:
        if self.exc is not None or "Traceback" in self.err:
            return False
        if self.timed_out:
            return self.case.long_ok
        if self.rc == 0:
            return not self.case.must_fail
        lines = self.err.strip().splitlines()
        return self.rc == 2 and len(lines) == 1 and lines[0].startswith("error:")

    def why(self) -> str:
        if self.exc:
            return f"exception {self.exc}"
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.rc == 0 and self.case.must_fail:
            return "accepted an invalid value (exit 0)"
        return f"exit {self.rc}, stderr {self.err.strip()[:300]!r}"


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _Timeout


def run_case(case: Case) -> Outcome:
    """Run one case in-process; capture exit code, stdout, stderr and any exception."""
    from loradyn.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc: int | None = None
    exc_text = None
    timed_out = False
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, case.limit)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(case.argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Timeout:
        timed_out = True
    except BaseException as exc:  # noqa: BLE001 - the point is to see it
        exc_text = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return Outcome(case, rc, out.getvalue(), err.getvalue(), exc_text,
                   time.perf_counter() - t0, timed_out)


def _commands() -> dict[tuple[str, ...], object]:
    import typer

    from loradyn.cli import app

    found: dict[tuple[str, ...], object] = {}

    def walk(c, path):  # noqa: ANN001
        if isinstance(getattr(c, "commands", None), dict):
            for name, sub in c.commands.items():
                walk(sub, path + (name,))
        else:
            found[path] = c

    walk(typer.main.get_command(app), ())
    return found


def baselines(tmp: Path) -> dict[tuple[str, ...], list[str]]:
    """A small valid invocation of each command (fast ones first)."""
    spec = tmp / "tour.toml"
    spec.write_text(SMALL_SWEEP)
    return {
        ("tau",): ["tau", "-t", "erf", "--mu", "0.5", "--format", "csv"],
        ("singularities",): ["singularities", "-t", "he3", "--format", "csv"],
        ("hermite",): ["hermite", "-a", "erf", "--kmax", "5", "--format", "csv"],
        ("simulate",): ["simulate", "-t", "linear", "--mu", "0.5", "--d", "50", "--batch", "10",
                        "--steps", "30", "--format", "json"],
        ("escape",): ["escape", "-t", "erf", "--mu", "0.5", "--d", "300", "--batch", "60",
                      "--format", "csv"],
        ("twolayer", "tau"): ["twolayer", "tau", "--mu", "0.5,0.5", "--format", "csv"],
        ("twolayer", "escape"): ["twolayer", "escape", "--mu", "0.5,0.3", "--d", "300",
                                 "--batch", "60", "--format", "csv"],
        ("twolayer", "simulate"): ["twolayer", "simulate", "--mu", "0.5,0.5", "--d", "40",
                                   "--batch", "10", "--steps", "20", "--format", "json"],
        ("reproduce",): ["reproduce", "--out", str(tmp / "rep"), "--scale", "test",
                         "--only", "fig8", "--no-progress"],
        ("sweep", "run"): ["sweep", "run", str(spec), "--out", str(tmp / "sw"), "--workers",
                           "1", "--no-progress"],
        ("sweep", "status"): ["sweep", "status", str(tmp / "sw")],
        ("sweep", "collect"): ["sweep", "collect", str(tmp / "sw"), "--out",
                               str(tmp / "sw.nc")],
        ("vit", "run"): ["vit", "run", "--scale", "smoke", "--out", str(tmp / "vit"),
                         "--device", "cpu", "--threads", "1"],
        ("vit", "pretrain"): ["vit", "pretrain", "--scale", "smoke", "--out", str(tmp / "vit"),
                              "--device", "cpu", "--threads", "1"],
        ("vit", "finetune"): ["vit", "finetune", "--scale", "smoke", "--out", str(tmp / "vit"),
                              "--device", "cpu", "--threads", "1"],
        ("vit", "table"): ["vit", "table", "--out", str(tmp / "vit"), "--no-figure"],
    }


FAST = {("tau",), ("singularities",), ("hermite",), ("simulate",), ("escape",),
        ("twolayer", "tau"), ("twolayer", "simulate"), ("twolayer", "escape")}


def _set(argv: list[str], opts: list[str], value: str | None) -> list[str]:
    """``argv`` with the option ``opts`` set to ``value`` (``None``: removed)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in opts:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    if value is not None:
        out += [opts[0], value]
    return out


def _set_arg(argv: list[str], index: int, value: str | None) -> list[str]:
    out = list(argv)
    if value is None:
        del out[index]
    else:
        out[index] = value
    return out


def cases(tmp: Path, fast: bool = False) -> list[Case]:
    """Every generated case (``fast``: only the commands that run in well under a second)."""
    tmp = Path(tmp)
    base = baselines(tmp)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    a_dir = tmp / "a_dir"
    a_dir.mkdir(exist_ok=True)
    unwritable = "/proc/loradyn-tour/x.nc"
    result: list[Case] = []
    for path, cmd in _commands().items():
        if path not in base or (fast and path not in FAST):
            continue
        argv = base[path]
        name = " ".join(path)
        limit = 20.0 if path in FAST else 90.0
        result.append(Case(f"{name} baseline", argv, limit=limit))
        for p in cmd.params:
            if p.name in ("help",) or getattr(p, "is_flag", False):
                continue
            ann = getattr(getattr(p, "type_descriptor", None), "annotation", str)
            typ = getattr(ann, "__name__", str(ann))
            is_arg = type(p).__name__.endswith("Argument")
            if is_arg:
                idx = len(path) + sum(1 for q in cmd.params[:cmd.params.index(p)]
                                      if type(q).__name__.endswith("Argument"))

                def setv(v, idx=idx, argv=argv):
                    return _set_arg(argv, idx, v)
            else:
                opts = list(p.opts)

                def setv(v, opts=opts, argv=argv):
                    return _set(argv, opts, v)
            label = f"{name} {p.opts[0] if p.opts else p.name}"
            if p.required:
                result.append(Case(f"{label} missing", setv(None), must_fail=True, limit=limit))
            if p.name in PATH_OPTIONS:
                for what, v in (("empty", ""), ("a directory", str(a_dir)),
                                ("below a file", str(a_file / "x.nc")),
                                ("unwritable", unwritable)):
                    must = what in ("empty", "below a file", "unwritable")
                    if p.name in ("config", "spec", "directory") and what == "empty":
                        must = True
                    if p.name == "data_dir":
                        must = False  # an input folder, unused by the bundled digits preset
                    if p.name == "out" and path[0] in ("reproduce", "vit", "sweep") and \
                            what == "a directory":
                        must = False  # an output directory is what these take
                    result.append(Case(f"{label} {what}", setv(v), must_fail=must, limit=limit))
                continue
            if typ in ("int", "float") or p.name in ("mu", "rank", "seeds", "checkpoints",
                                                        "variance", "kmax"):
                for v in NUMBER_BAD:
                    result.append(Case(f"{label}={v!r}", setv(v), must_fail=True, limit=limit))
                for v in NUMBER_ODD:
                    huge_run = v in ("1e300", "1000000000000") and p.name in (
                        "steps", "d", "batch", "seeds", "kmax", "record_every")
                    result.append(Case(f"{label}={v!r}", setv(v), limit=limit,
                                       long_ok=huge_run))
            elif p.name in CHOICE_OPTIONS and not (p.name == "device" and path == ("simulate",)):
                # (simulate --device is free text, used only by --engine dense --backend torch)
                for v in TEXT_BAD:
                    result.append(Case(f"{label}={v!r}", setv(v), must_fail=True, limit=limit))
            else:
                for v in ("", "abc"):
                    result.append(Case(f"{label}={v!r}", setv(v), limit=limit))
    # collisions and special cases that are not one option's value
    sim = base[("simulate",)]
    same = str(tmp / "same.nc")
    result += [
        Case("simulate --out and --plot the same file", sim + ["--out", same, "--plot", same],
             must_fail=True),
        Case("simulate --plot with an unknown extension", sim + ["--plot", str(tmp / "p.xyz")],
             must_fail=True),
        Case("simulate --out an existing directory", sim + ["--out", str(a_dir)],
             must_fail=True),
        Case("hermite --kmax 200", ["hermite", "-a", "erf", "--kmax", "200"]),
        Case("twolayer tau --rank nan", ["twolayer", "tau", "--mu", "0.5", "--rank", "nan"],
             must_fail=True),
        Case("twolayer tau --rank 1e20", ["twolayer", "tau", "--mu", "0.5", "--rank", "1e20"],
             must_fail=True),
        Case("simulate --engine ode --lr 1e6",
             ["simulate", "-t", "erf", "--engine", "ode", "--lr", "1e6", "--steps", "1000"],
             limit=20),
        Case("twolayer simulate --engine ode --lr 1e300",
             ["twolayer", "simulate", "--engine", "ode", "--lr", "1e300", "--steps", "100"],
             limit=20),
        Case("nosuchcmd", ["nosuchcmd"], must_fail=True),
        Case("--version", ["--version"]),
        Case("bare", []),
        Case("bare twolayer", ["twolayer"]),
    ]
    if not fast:
        rep = base[("reproduce",)]
        result += [
            Case("reproduce --seed -1", _set(rep, ["--seed"], "-1"), must_fail=True, limit=60),
            Case("reproduce --out ''", _set(rep, ["--out"], ""), must_fail=True, limit=60),
            Case("sweep collect --out into the sweep",
                 ["sweep", "collect", str(tmp / "sw"), "--out", str(tmp / "sw" / "manifest.json")],
                 must_fail=True, limit=60),
            Case("sweep run --scheduler inproc://nothing",
                 _set(base[("sweep", "run")], ["--workers"], None) + ["--scheduler",
                                                                     "inproc://nothing"],
                 must_fail=True, limit=60),
        ]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="only the fast commands")
    ap.add_argument("-k", default="", help="only cases whose label contains this")
    ap.add_argument("-v", action="store_true", help="print every case")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        todo = [c for c in cases(Path(tmp), fast=args.fast) if args.k in c.label]
        bad = []
        t0 = time.perf_counter()
        for c in todo:
            o = run_case(c)
            if args.v:
                print(f"{'clean  ' if o.clean else 'UNCLEAN'} {o.seconds:5.1f}s {c.label}",
                      flush=True)
            if not o.clean:
                bad.append(o)
        print(f"\n{len(todo)} cases, {len(todo) - len(bad)} clean, {len(bad)} unclean "
              f"({time.perf_counter() - t0:.0f} s)")
        for o in bad:
            print(f"  UNCLEAN {o.case.label}: {o.why()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
