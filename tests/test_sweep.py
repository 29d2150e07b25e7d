"""Sweeps: spec validation, Dask execution, resume after SIGKILL, status and collect.

Budget: about 40 s on 2 cores (one shared 2-worker LocalCluster; one subprocess sweep
with its own cluster for the crash test). Simulations are tiny (reduced engine).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from loradyn.cli import main
from loradyn.config import RunConfig
from loradyn.engines import simulate
from loradyn.errors import LoradynError
from loradyn.sweep import collect, load_spec, parse_spec, run_sweep, sweep_status
from loradyn.sweep.store import TMP_MARK, SweepStore

distributed = pytest.importorskip("dask.distributed")

VARS = ("u", "m", "c", "mse", "escape_step", "escape_time", "diverged")

SMALL = """
[sweep]
name = "small"
engine = "reduced"

[grid]
teacher = ["linear", "erf"]
mu = [0.3, 0.7]
seed = [0, 1]

[fixed]
d = 60
lr = 0.1
batch = 20
steps = 120
record_every = 10
"""


@pytest.fixture(scope="module")
def scheduler():
    """One 2-worker LocalCluster shared by the tests of this module."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _files(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "results").iterdir()}


# --------------------------------------------------------------------------- spec


def test_spec_expands_grid_and_aliases_seed():
    spec = parse_spec(SMALL)
    assert spec.size == 8 and list(spec.grid) == ["teacher", "mu", "seed"]
    tasks = spec.tasks()
    assert len({t.key for t in tasks}) == 8
    t = tasks[5]  # C order: teacher=erf, mu=0.3, seed=1
    assert t.point == {"teacher": "erf", "mu": 0.3, "seed": 1}
    assert t.params["seed0"] == 1 and t.params["seeds"] == 1 and t.params["mu"] == [0.3]
    assert t.params["engine"] == "reduced" and t.params["student"] == "erf"
    # the key hashes the canonical config: writing a default explicitly changes nothing
    same = parse_spec(SMALL.replace("record_every = 10", "record_every = 10\nthreshold = 0.5"))
    assert [x.key for x in same.tasks()] == [x.key for x in tasks]
    other = parse_spec(SMALL.replace("lr = 0.1", "lr = 0.2"))
    assert not {x.key for x in other.tasks()} & {x.key for x in tasks}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SMALL.replace("d = 60", "dd = 60"), "fixed.dd: unknown parameter"),
        (SMALL.replace('"erf"]', '"erff"]'), "grid.teacher"),
        (SMALL.replace("d = 60", 'd = "sixty"'), "fixed.d"),
        (SMALL.replace("lr = 0.1", 'lr = "0.1"'), "fixed.lr"),
        (SMALL.replace("mu = [0.3, 0.7]", "mu = [0.3, 1.7]"), "grid.mu"),
        (SMALL.replace("seed = [0, 1]", "seed = []"), "grid.seed"),
        ('[sweep]\nname = "x"\n[grid]\n[fixed]\nd = 10\n', "[grid] table is empty"),
        (SMALL.replace("[grid]", "[grid\n"), "not valid TOML"),
        (SMALL.replace('engine = "reduced"', 'engine = "fast"'), "sweep.engine"),
        (SMALL.replace("d = 60", "engine = 'dense'"), "fixed.engine"),
        (SMALL + "mu = 0.5\n", "fixed.mu"),
        (SMALL.replace("seed = [0, 1]", "seed = [0, 0]"), "grid.seed"),
        (SMALL + "[extra]\n", "extra"),
    ],
)
def test_bad_specs_raise_one_line(text, needle):
    with pytest.raises(LoradynError) as err:
        parse_spec(text)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_run_sweep_wrong_argument_types_are_one_line_errors(tmp_path):
    with pytest.raises(LoradynError, match="SweepSpec, a dict or the path") as err:
        run_sweep(None, tmp_path / "out")
    assert "\n" not in str(err.value)
    with pytest.raises(LoradynError, match="sweep directory must be a path"):
        run_sweep(parse_spec(SMALL), None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SMALL.replace("d = 60", "bogus = 1"), "fixed.bogus"),
        (SMALL.replace('"erf"]', '"notanactivation"]'), "grid.teacher"),
        (SMALL.replace("batch = 20", "batch = 2.5"), "fixed.batch"),
        ('[sweep]\nname = "x"\n[grid]\n', "[grid] table is empty"),
        ("[sweep\nname = 'x'\n", "not valid TOML"),
    ],
)
def test_cli_bad_sweep_file_exit_code_2(tmp_path, capsys, text, needle):
    spec = _write(tmp_path / "bad.toml", text)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "run", str(spec), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was created


def test_cli_bad_sweep_file_subprocess(tmp_path):
    spec = _write(tmp_path / "bad.toml", SMALL.replace('"erf"]', '"erff"]'))
    res = subprocess.run(
        [sys.executable, "-m", "loradyn", "sweep", "run", str(spec), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: grid.teacher") and "erff" in lines[0]


@pytest.mark.parametrize("address", ["foo", "tcp://127.0.0.1:x"])
def test_cli_malformed_scheduler_address_is_one_line_error(tmp_path, capsys, address):
    """A malformed --scheduler is a user error (exit 2), not a ValueError traceback."""
    spec = _write(tmp_path / "small.toml", SMALL)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "run", str(spec), "--out", str(tmp_path / "out"), "--scheduler", address,
              "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot connect to the Dask scheduler") and "\n" not in err
    import dask

    assert dask.config.get("scheduler", None) is None  # the failed Client left no global state


# --------------------------------------------------------------------------- run and collect


def test_small_sweep_runs_and_collects(tmp_path, scheduler, capsys):
    spec_path = _write(tmp_path / "small.toml", SMALL)
    out = tmp_path / "run"
    status = run_sweep(spec_path, out, scheduler=scheduler)
    assert status.complete and status.done == 8 and not status.failed
    assert (out / "sweep.toml").read_text() == SMALL
    assert len(list((out / "results").glob("*.nc"))) == 8

    ds = collect(out)
    assert ds["m"].dims == ("teacher", "mu", "seed", "step")
    assert list(ds["teacher"].values) == ["linear", "erf"]
    assert np.allclose(ds["mu"], [0.3, 0.7]) and list(ds["seed"].values) == [0, 1]
    assert np.array_equal(ds["step"], np.arange(0, 121, 10))
    assert (ds["task_status"] == "done").all()
    base = dict(d=60, lr=0.1, batch=20, steps=120, record_every=10)
    for teacher in ("linear", "erf"):
        for mu in (0.3, 0.7):
            for seed in (0, 1):
                ref = simulate(RunConfig(teacher=teacher, mu=mu, seed0=seed, **base))
                cell = ds.sel(teacher=teacher, mu=mu, seed=seed)
                for v in VARS:
                    ref_v = ref[v].isel(mu=0, seed=0).values
                    assert np.array_equal(cell[v].values, ref_v, equal_nan=True), v
                assert json.loads(str(cell["config"].values))["teacher"] == teacher

    # the CLI writes the same dataset; status says done 8 of 8
    nc = tmp_path / "all.nc"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "collect", str(out), "--out", str(nc)])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("collected 8 of 8 tasks")
    back = xr.load_dataset(nc)
    assert np.array_equal(back["m"].values, ds["m"].values)
    # a missing --out folder is a one-line user error, not a netCDF traceback
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "collect", str(out), "--out", str(tmp_path / "missing" / "all.nc")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "does not exist" in err[0]
    assert list(back["teacher"].values) == ["linear", "erf"]
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "status", str(out)])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("done 8 of 8")

    # rerun: nothing to do, no file rewritten, no cluster needed
    before = _files(out)
    assert run_sweep(spec_path, out, scheduler="tcp://127.0.0.1:1").complete
    assert _files(out) == before
    with SweepStore.open(out).lock():  # a second runner on the same directory is refused
        with pytest.raises(LoradynError, match="another `loradyn sweep run`"):
            run_sweep(spec_path, out, scheduler="tcp://127.0.0.1:1")


def test_failed_tasks_recorded_and_retried_only_on_request(tmp_path, scheduler, capsys):
    text = """
[sweep]
name = "fails"
[grid]
lr = [0.01, 40.0]
[fixed]
teacher = "he3"
mu = 0.8
d = 50
batch = 10
steps = 60
"""
    spec_path = _write(tmp_path / "f.toml", text)
    out = tmp_path / "f"
    status = run_sweep(spec_path, out, scheduler=scheduler)
    assert status.done == 1 and len(status.failed) == 1 and status.pending == 0
    bad = status.failed[0]
    assert bad.point == {"lr": 40.0} and "DivergenceError" in bad.error
    rec = json.loads((out / "results" / f"{bad.key}.error.json").read_text())
    assert rec["params"]["lr"] == 40.0 and "diverged" in rec["message"]

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "status", str(out)])
    assert exc.value.code == 0
    text_out = capsys.readouterr().out
    assert text_out.startswith("done 1 of 2") and bad.key in text_out and "lr=40.0" in text_out

    ds = collect(out)
    assert list(ds["task_status"].values) == ["done", "failed"]
    assert np.isnan(ds["escape_step"].sel(lr=40.0)).all()
    assert np.isfinite(ds["m"].sel(lr=0.01)).all()

    before = _files(out)
    run_sweep(spec_path, out, scheduler="tcp://127.0.0.1:1")  # failed: not retried
    assert _files(out) == before
    again = run_sweep(spec_path, out, scheduler=scheduler, retry_failed=True)
    assert len(again.failed) == 1
    after = _files(out)
    assert after[f"{bad.key}.error.json"] != before[f"{bad.key}.error.json"]  # rewritten
    ok = [k for k in before if k.endswith(".nc")]
    assert all(after[k] == before[k] for k in ok)  # finished task untouched


def test_seed0_grid_with_several_seeds_and_refusal_of_other_sweep(tmp_path, scheduler):
    spec = {
        "sweep": {"name": "replicas"},
        "grid": {"seed0": [0, 10]},
        "fixed": {"seeds": 3, "mu": [0.2, 0.6], "d": 40, "batch": 8, "steps": 30},
    }
    out = tmp_path / "r"
    assert run_sweep(spec, out, scheduler=scheduler).complete
    ds = collect(out)
    assert ds["m"].dims == ("seed0", "mu", "seed_index", "step")
    assert ds["seed_value"].values.tolist() == [[0, 1, 2], [10, 11, 12]]
    ref = simulate(RunConfig(seeds=3, seed0=10, mu=[0.2, 0.6], d=40, batch=8, steps=30))
    assert np.array_equal(ds["m"].sel(seed0=10).values, ref["m"].values)

    other = {**spec, "grid": {"seed0": [0, 20]}}
    with pytest.raises(LoradynError, match="different sweep"):
        run_sweep(other, out, scheduler=scheduler)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(LoradynError, match="not a sweep directory"):
        run_sweep(spec, junk, scheduler=scheduler)
    with pytest.raises(LoradynError, match="not a sweep directory"):
        sweep_status(junk)


def test_invalid_combination_fails_only_its_task(tmp_path, scheduler):
    spec = {
        "sweep": {"name": "combo"},
        "grid": {"pretraining": ["aligned", "misaligned"]},
        "fixed": {"p0": 0.1, "m0": 0.1, "d": 40, "batch": 8, "steps": 20},
    }
    tasks = load_spec(spec).tasks()
    assert "p0" in tasks[0].error and tasks[1].error is None
    status = run_sweep(spec, tmp_path / "c", scheduler=scheduler)
    assert status.done == 1 and [f.point for f in status.failed] == [{"pretraining": "aligned"}]
    assert status.failed[0].error.startswith("LoradynError: p0")
    ds = collect(tmp_path / "c")
    assert list(ds["task_status"].values) == ["failed", "done"]
    assert "p" in ds and np.isfinite(ds["p"].sel(pretraining="misaligned")).all()

    only_bad = {**spec, "grid": {"pretraining": ["aligned"]}}
    with pytest.raises(LoradynError, match="every task of the sweep is invalid"):
        run_sweep(only_bad, tmp_path / "none", scheduler=scheduler)
    assert not (tmp_path / "none").exists()


def test_kind_registry_and_plugins(monkeypatch):
    from loradyn.sweep import TaskKind, available_kinds, get_kind, register_kind

    def check(key, value):
        if key != "x":
            raise LoradynError("unknown parameter; known: x")
        return float(value)

    toy = TaskKind(name="toy-test", run=lambda p, e: None, check_value=check,
                   prepare=lambda p, e: {"x": p["x"]}, engines=("a", "b"), default_engine="a")
    register_kind(toy, replace=True)
    assert "toy-test" in available_kinds() and get_kind("toy-test") is toy
    spec = parse_spec('[sweep]\nname = "t"\nkind = "toy-test"\nengine = "b"\n[grid]\nx = [1, 2]\n')
    assert [t.params for t in spec.tasks()] == [{"x": 1.0}, {"x": 2.0}]
    with pytest.raises(LoradynError, match="grid.y: unknown parameter"):
        parse_spec('[sweep]\nname = "t"\nkind = "toy-test"\n[grid]\ny = [1]\n')
    with pytest.raises(LoradynError, match="sweep.kind: unknown kind 'nope'"):
        parse_spec('[sweep]\nname = "t"\nkind = "nope"\n[grid]\nx = [1]\n')
    monkeypatch.setenv("LORADYN_SWEEP_PLUGINS", "loradyn_no_such_module")
    with pytest.raises(LoradynError, match="loradyn_no_such_module"):
        get_kind("nope")


# --------------------------------------------------------------------------- crash and resume

CRASH = """
[sweep]
name = "crash"
engine = "reduced"

[grid]
mu = [0.2, 0.5, 0.8]
seed = [0, 1]

[fixed]
teacher = "erf"
d = 1000
lr = 0.2
batch = 200
steps = 1500
record_every = 250
"""


def test_sigkill_then_rerun_completes_every_task_once(tmp_path, scheduler):
    spec_path = _write(tmp_path / "crash.toml", CRASH)
    out = tmp_path / "crash"
    total = load_spec(spec_path).size
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "loradyn", "sweep", "run", str(spec_path), "--out", str(out),
           "--workers", "2"]
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 150
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            results = out / "results"
            n = len(list(results.glob("*.nc"))) if results.is_dir() else 0
            if n:
                break
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its Dask workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.2)
    survived = _files(out)
    finished = {k for k in survived if k.endswith(".nc") and not k.startswith(".")}
    assert 0 < len(finished) < total, f"{len(finished)} of {total} finished before the kill"

    # rerun (on the shared cluster): completes without rerunning the finished tasks
    status = run_sweep(spec_path, out, scheduler=scheduler)
    assert status.complete and status.done == total
    names = sorted(p.name for p in (out / "results").iterdir())
    assert not [x for x in names if TMP_MARK in x or x.endswith(".error.json")]
    keys = [t["key"] for t in json.loads((out / "manifest.json").read_text())["tasks"]]
    assert names == sorted(f"{k}.nc" for k in keys)  # each task exactly once
    after = _files(out)
    assert all(after[k] == survived[k] for k in finished)  # not repeated

    # every result equals the one of an uninterrupted run, bit for bit
    ref_out = tmp_path / "reference"
    assert run_sweep(spec_path, ref_out, scheduler=scheduler).complete
    for k in keys:
        a = xr.load_dataset(out / "results" / f"{k}.nc")
        b = xr.load_dataset(ref_out / "results" / f"{k}.nc")
        assert a.attrs["config"] == b.attrs["config"]
        for v in VARS:
            assert np.array_equal(a[v].values, b[v].values, equal_nan=True), v
    assert collect(out)["m"].identical(collect(ref_out)["m"])
