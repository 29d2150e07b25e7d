"""The one result store (loradyn.store): validation on use, code hash, corrupt results healed.

A sweep needs a Dask cluster: one 2-worker LocalCluster is shared by this module, and
the tasks are tiny (reduced engine, a few dozen steps).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import xarray as xr

from loradyn import store as store_mod
from loradyn.cli import main
from loradyn.config import RunConfig
from loradyn.engines import simulate
from loradyn.errors import LoradynError
from loradyn.io import load_netcdf, save_netcdf
from loradyn.store import ResultStore, code_hash
from loradyn.sweep import collect, run_sweep, sweep_status
from loradyn.sweep.runner import execute_task
from loradyn.sweep.simulate import run as run_simulate

distributed = pytest.importorskip("dask.distributed")

SPEC = """
[sweep]
name = "tiny"
engine = "reduced"

[grid]
mu = [0.3, 0.7]

[fixed]
teacher = "erf"
d = 40
lr = 0.1
batch = 10
steps = 40
record_every = 10
"""


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as c:
        yield c.scheduler_address


def _cfg() -> RunConfig:
    return RunConfig(teacher="erf", d=30, lr=0.1, batch=5, steps=20, record_every=5)


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# --------------------------------------------------------------------------- netCDF


def test_one_netcdf_pair_round_trips_bool_natively(tmp_path):
    ds = simulate(_cfg())
    path = save_netcdf(ds, tmp_path / "r.nc")
    with xr.open_dataset(path) as raw:  # stored natively, not as a marked int8
        assert raw["diverged"].dtype == bool and "loradyn_bool" not in raw["diverged"].attrs
    back = load_netcdf(path)
    assert back["diverged"].dtype == bool and back["escaped"].dtype == bool
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())


# --------------------------------------------------------------------------- the store


def test_store_states_and_validation(tmp_path):
    st = ResultStore(tmp_path / "s").ensure()
    key = _cfg().key()
    assert st.state(key) == ("missing", "")
    ds = st.get(key, lambda: simulate(_cfg()))
    assert ds.attrs["result_key"] == key and ds.attrs["code_hash"] == code_hash()
    assert st.state(key)[0] == "done"
    xr.testing.assert_identical(st.read(key), ds)
    # a result written under another key (copied over) is corrupt
    other = _cfg().replace(lr=0.2).key()
    st.result_path(other).write_bytes(st.result_path(key).read_bytes())
    state, reason = st.state(other)
    assert state == "corrupt" and "holds key" in reason
    # truncated and empty files are corrupt too
    data = st.result_path(key).read_bytes()
    st.result_path(key).write_bytes(data[: len(data) // 2])
    assert st.state(key)[0] == "corrupt"
    st.result_path(key).write_bytes(b"")
    assert st.state(key)[0] == "corrupt"


def test_store_get_moves_a_corrupt_result_aside_and_redoes_it(tmp_path):
    lines: list[str] = []
    st = ResultStore(tmp_path / "s", warn=lines.append).ensure()
    key = _cfg().key()
    st.get(key, lambda: simulate(_cfg()))
    st.result_path(key).write_text("not netcdf")
    ds = st.get(key, lambda: simulate(_cfg()))
    assert len(lines) == 1 and key in lines[0] and "corrupt" in lines[0]
    assert st.state(key)[0] == "done" and ds.attrs["result_key"] == key
    assert (tmp_path / "s" / "corrupt" / f"{key}.nc").read_text() == "not netcdf"


def test_a_code_change_makes_results_stale(tmp_path, monkeypatch):
    st = ResultStore(tmp_path / "s").ensure()
    key = _cfg().key()
    st.get(key, lambda: simulate(_cfg()))
    monkeypatch.setattr(store_mod, "code_hash", lambda: "0" * 16)
    assert st.state(key)[0] == "stale"
    calls = []
    st.get(key, lambda: calls.append(1) or simulate(_cfg()))
    assert calls == [1]  # recomputed, not served
    assert st.read(key).attrs["code_hash"] == "0" * 16
    monkeypatch.undo()
    assert ResultStore(tmp_path / "s", reuse_other_code=True).state(key)[0] == "done"


def test_code_hash_covers_number_code_only():
    files = {p.as_posix().split("/loradyn/", 1)[1] for p in store_mod._code_files()}
    assert "engines/reduced.py" in files and "twolayer/engines.py" in files
    assert "population.py" in files and "vit/train.py" in files
    assert not any(f.startswith(("cli/", "reproduce/", "sweep/")) for f in files)
    assert len(code_hash()) == 16


def test_a_worker_with_other_code_refuses_to_run():
    params = _cfg().to_dict()
    status, rec = execute_task(run_simulate, params, "reduced", "f" * 16)
    assert status == "error" and rec["type"] == "CodeMismatch"
    status, ds = execute_task(run_simulate, params, "reduced", code_hash())
    assert status == "ok" and isinstance(ds, xr.Dataset)


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize("damage", ["truncate", "empty", "replace"])
def test_corrupt_sweep_result_is_reported_redone_and_named(tmp_path, scheduler, capsys, damage):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sw"
    run_sweep(spec, out, scheduler=scheduler)
    files = sorted((out / "results").glob("*.nc"))
    assert len(files) == 2
    victim, other = files
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:300])
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.write_bytes(other.read_bytes())
    st = sweep_status(out)
    assert st.done == 1 and len(st.corrupt) == 1 and st.corrupt[0].key == victim.stem
    code, text, _ = _cli(["sweep", "status", str(out)], capsys)
    assert code == 0 and "corrupt" in text and victim.stem in text
    with pytest.raises(LoradynError, match=victim.stem):
        collect(out)
    code, _, err = _cli(["sweep", "collect", str(out), "--out", str(tmp_path / "c.nc")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:")
    code, _, err = _cli(["sweep", "run", str(spec), "--out", str(out), "--scheduler", scheduler,
                         "--no-progress"], capsys)
    warn = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warn) == 1 and victim.stem in warn[0]
    assert sweep_status(out).complete
    assert (out / "corrupt" / victim.name).exists()


@pytest.mark.parametrize("text", ["[]", "null", '{"format": 1}', "{not json"])
def test_malformed_manifest_is_one_line(tmp_path, capsys, text):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "manifest.json").write_text(text)
    code, _, err = _cli(["sweep", "status", str(out)], capsys)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1


def test_manifest_index_out_of_range_and_results_file(tmp_path, scheduler, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sw"
    run_sweep(spec, out, scheduler=scheduler)
    man = json.loads((out / "manifest.json").read_text())
    good = json.dumps(man)
    man["tasks"][0]["index"] = [7]
    (out / "manifest.json").write_text(json.dumps(man))
    for args in (["sweep", "status", str(out)],
                 ["sweep", "collect", str(out), "--out", str(tmp_path / "c.nc")]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and "out of range" in err and err.count("\n") == 1
    (out / "manifest.json").write_text(good)
    import shutil

    shutil.rmtree(out / "results")
    (out / "results").write_text("")
    code, _, err = _cli(["sweep", "status", str(out)], capsys)
    assert code == 2 and "not a folder" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- reproduce cache


def test_reproduce_cache_heals_a_corrupt_result_and_follows_the_code(tmp_path, monkeypatch,
                                                                     capsys):
    from loradyn.reproduce import _common
    from loradyn.reproduce.runner import reproduce

    out = tmp_path / "rep"
    reproduce(out, scale="test", only="fig9", progress=False)
    cached = sorted((out / "data" / "results").glob("*.nc"))
    assert cached
    cached[0].write_bytes(b"garbage")
    monkeypatch.setattr(_common, "_SIM_CACHE", {})
    capsys.readouterr()
    res = reproduce(out, scale="test", only="fig9", progress=False)
    err = capsys.readouterr().err
    assert [i.status for i in res.items] == ["done"]
    assert sum(line.startswith("warning:") for line in err.splitlines()) == 1
    assert cached[0].stem in err
    # a code change: the cache is not served
    monkeypatch.setattr(_common, "_SIM_CACHE", {})
    monkeypatch.setattr(store_mod, "code_hash", lambda: "1" * 16)
    res = reproduce(out, scale="test", only="fig9", progress=False)
    ds = load_netcdf(cached[0])
    assert ds.attrs["code_hash"] == "1" * 16
    assert np.all(np.isfinite(ds["u"].values))


# --------------------------------------------------------------------------- two-layer kind


def test_twolayer_config_round_trips_from_the_result_attrs():
    from loradyn.twolayer import TwoLayerConfig
    from loradyn.twolayer import simulate as tl_simulate

    cfg = TwoLayerConfig(mu=(0.5, 0.5), d=40, lr=0.05, batch=10, steps=20, seeds=2)
    ds = tl_simulate(cfg, [1, 2], "reduced")
    back = TwoLayerConfig.from_json(ds.attrs["config"])
    assert back.ranks == (1, 2) and back.engine == "reduced"
    assert back == cfg.replace(ranks=[1, 2])
    assert ds["diverged"].dtype == bool
    # the stored config reruns the same numbers
    again = tl_simulate(back)
    xr.testing.assert_identical(again, ds)
    with pytest.raises(LoradynError):
        TwoLayerConfig.from_json('{"mu": [0.5], "nope": 1}')


TWOLAYER_SPEC = """
[sweep]
name = "tl"
kind = "twolayer"
engine = "reduced"

[grid]
rank = [1, 2]
seed = [0, 1]

[fixed]
mu = [0.5, 0.5]
d = 40
lr = 0.05
batch = 10
steps = 20
"""


def test_twolayer_sweep_runs_collects_and_shares_keys(tmp_path, scheduler):
    from loradyn.sweep import load_spec
    from loradyn.twolayer import TwoLayerConfig
    from loradyn.twolayer import simulate as tl_simulate

    spec = tmp_path / "tl.toml"
    spec.write_text(TWOLAYER_SPEC)
    st = run_sweep(spec, tmp_path / "sw", scheduler=scheduler)
    assert st.complete and st.total == 4
    ds = collect(tmp_path / "sw")
    assert ds.sizes["rank"] == 2 and ds.sizes["seed"] == 2
    assert ds["diverged"].dtype == bool
    # a task's key is the config's own key: the same run made directly has the same key
    task = load_spec(spec).tasks()[3]
    cfg = TwoLayerConfig.from_dict(task.params)
    assert task.key == cfg.key()
    direct = tl_simulate(cfg)
    stored = ResultStore(tmp_path / "sw").read(task.key)
    np.testing.assert_array_equal(stored["loss"].values, direct["loss"].values)
    with pytest.raises(LoradynError, match="grid.rank"):
        load_spec({"sweep": {"name": "x", "kind": "twolayer"}, "grid": {"rank": [0]}})


def test_sweep_recomputes_results_of_other_code_unless_told(tmp_path, scheduler, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sw"
    run_sweep(spec, out, scheduler=scheduler)
    path = sorted((out / "results").glob("*.nc"))[0]
    ds = load_netcdf(path)
    ds.attrs["code_hash"] = "0" * 16  # as if made by another version of the engines
    save_netcdf(ds, path)
    st = sweep_status(out)
    assert st.done == 1 and st.pending == 1 and not st.corrupt
    assert run_sweep(spec, out, scheduler=scheduler, reuse_other_code=True).done == 2
    assert load_netcdf(path).attrs["code_hash"] == "0" * 16  # kept
    capsys.readouterr()
    run_sweep(spec, out, scheduler=scheduler)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "other number-computing code" in err
    assert load_netcdf(path).attrs["code_hash"] == code_hash()
