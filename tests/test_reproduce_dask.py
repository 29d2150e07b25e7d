"""``reproduce`` on the Dask machinery: same data and claims as a serial run; resumes after
SIGKILL with every simulation stored exactly once; ``--from-data`` simulates nothing.

Test scale, a few figures with simulations of both models (fig4, fig9: single-index;
fig13: two-layer), one 2-worker LocalCluster per reproduction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from loradyn.io import load_netcdf
from loradyn.reproduce import _common
from loradyn.reproduce.runner import reproduce

pytest.importorskip("dask.distributed")

ONLY = "fig4,fig9,fig13"
TIMING_ATTRS = ("wall_time_s",)


def _data(out: Path) -> dict[str, xr.Dataset]:
    res = {}
    for p in sorted((out / "data").glob("*.nc")):
        ds = load_netcdf(p)
        ds.attrs = {k: v for k, v in ds.attrs.items() if k not in TIMING_ATTRS}
        res[p.name] = ds
    return res


def _results(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "data" / "results").iterdir())


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    _common._SIM_CACHE.clear()
    res = reproduce(out, scale="test", only=ONLY, progress=False)
    assert [i.status for i in res.items] == ["done"] * 3
    return out, res


def test_two_workers_give_the_serial_data_and_claims(serial, tmp_path):
    ref, ref_res = serial
    _common._SIM_CACHE.clear()  # nothing served from this process's memory
    res = reproduce(tmp_path, scale="test", only=ONLY, progress=False, workers=2)
    assert [i.status for i in res.items] == ["done"] * 3
    assert (tmp_path / "claims.csv").read_text() == (ref / "claims.csv").read_text()
    a, b = _data(tmp_path), _data(ref)
    assert a.keys() == b.keys() and a
    for name in a:
        xr.testing.assert_identical(a[name], b[name])
    assert _results(tmp_path) == _results(ref)


def test_sigkill_then_rerun_stores_every_simulation_once(serial, tmp_path):
    ref, _ = serial
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "loradyn", "reproduce", "--scale", "test", "--only", ONLY,
           "--out", str(out), "--workers", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = out / "data" / "results"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.is_dir() and any(p.suffix == ".nc" for p in results.iterdir()):
            break
        time.sleep(0.2)
    killed = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its Dask workers
    proc.wait()
    assert killed, "the reproduction finished before it could be killed"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    names = _results(out)
    assert names == _results(ref)  # every simulation, each once, no temporaries
    assert (out / "claims.csv").read_text() == (ref / "claims.csv").read_text()


def test_from_data_rebuilds_without_simulating(serial, tmp_path, monkeypatch):
    ref, _ = serial
    _common._SIM_CACHE.clear()

    def fail(*args, **kwargs):
        raise AssertionError("simulated although --from-data was given")

    import loradyn.engines
    import loradyn.twolayer

    monkeypatch.setattr(loradyn.engines, "simulate", fail)
    monkeypatch.setattr(loradyn.twolayer, "simulate", fail)
    res = reproduce(tmp_path, scale="test", only=ONLY, progress=False, from_data=ref)
    assert [i.status for i in res.items] == ["done"] * 3
    assert (tmp_path / "claims.csv").read_text() == (ref / "claims.csv").read_text()
    a, b = _data(tmp_path), _data(ref)
    for name in b:
        xr.testing.assert_identical(a[name], b[name])
    # a simulation that is not stored is named, not computed
    other = tmp_path / "other"
    res = reproduce(other, scale="test", only="fig9", progress=False, from_data=ref, seed=5)
    assert res.items[0].status == "failed" and "not in" in res.items[0].reason
