"""Bad input and faults (issue 12): every usage error and bad value is one ``error:`` line
with exit 2, no code runs from a data file, a corrupted ViT run heals on rerun with one
warning line, diverged runs are flagged, nothing is overwritten by surprise.

A representative case of each kind runs through the real CLI in a subprocess
(``python -m loradyn``); the systematic cases of scripts/bad_input_tour.py (every option
of the fast commands: missing, empty, wrong type, NaN, inf, negative, zero, huge, bad
paths) run in-process through :func:`loradyn.cli.main`. Budget: about a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import loradyn
from loradyn.cli import main
from loradyn.errors import LoradynError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "loradyn", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


# --------------------------------------------------------------------------- real CLI


def test_usage_errors_version_and_help_through_the_real_cli():
    """Missing option, unknown option, bad type, unknown command: exit 2, one line each;
    ``--version`` and a bare command: exit 0. One subprocess runs all of them through
    ``loradyn.cli.main`` as the console script does (each in a fresh ``sys.exit``)."""
    cases = {
        "missing": ["tau", "--mu", "0.5"],
        "unknown option": ["tau", "-t", "erf", "--mu", "0.5", "--nosuch", "1"],
        "bad type": ["simulate", "--teacher", "erf", "--d", "abc"],
        "unknown command": ["nosuchcmd"],
        "bad value": ["simulate", "--teacher", "erf", "--lr", "nan"],
        "version": ["--version"],
        "bare": [],
        "bare group": ["sweep"],
    }
    code = (
        "import contextlib, io, json, sys\n"
        "from loradyn.cli import main\n"
        "res = {}\n"
        f"for name, argv in {cases!r}.items():\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            main(argv)\n"
        "            rc = None\n"
        "        except SystemExit as e:\n"
        "            rc = e.code\n"
        "    res[name] = [rc, out.getvalue(), err.getvalue()]\n"
        "print(json.dumps(res))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for name in ("missing", "unknown option", "bad type", "unknown command", "bad value"):
        rc, _, err = res[name]
        assert rc == 2, (name, err)
        _one_error_line(err)
    assert "--teacher" in res["missing"][2] and "--nosuch" in res["unknown option"][2]
    assert "nosuchcmd" in res["unknown command"][2] and "--d" in res["bad type"][2]
    rc, out, err = res["version"]
    assert rc == 0 and out.strip() == f"loradyn {loradyn.__version__}" and not err
    for name in ("bare", "bare group"):
        rc, out, err = res[name]
        assert rc == 0 and "Usage" in out and "Traceback" not in err, (name, out, err)
    assert "run" in res["bare group"][1] and "collect" in res["bare group"][1]


def test_console_entry_point_missing_option_and_version():
    """The same through ``python -m loradyn`` itself (a fresh interpreter per call)."""
    res = _cli("tau", "--mu", "0.5")
    assert res.returncode == 2
    assert "--teacher" in _one_error_line(res.stderr)
    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"loradyn {loradyn.__version__}"


def test_cli_module_does_not_import_click():
    """typer >= 0.29 bundles click; loradyn must not need the separate package."""
    src = (ROOT / "src" / "loradyn" / "cli" / "__init__.py").read_text()
    assert "import click" not in src


# --------------------------------------------------------------------------- pickles


class _Payload:
    """Unpickling this runs ``os.system`` (the attack of issue 12, point 2)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar_dir(root: Path, first: object) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = np.zeros((2, 3 * 32 * 32), dtype=np.uint8)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        obj = first if i == 0 else {"data": x, "labels": [0, 1]}
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)
    return folder


def test_malicious_cifar_pickle_is_refused_and_never_runs(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("peft")
    marker = tmp_path / "PWNED"
    data = tmp_path / "data"
    _cifar_dir(data, {"data": _Payload(marker), "labels": [0]})
    res = _cli("vit", "run", "--preset", "cifar10-svhn", "--scale", "smoke", "--out",
               str(tmp_path / "run"), "--data-dir", str(data), "--device", "cpu",
               "--threads", "1")
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res.stderr)
    assert "data_batch_1" in line and "system" in line
    assert not marker.exists()  # the payload never ran


def test_safe_unpickle_reads_plain_batches_and_refuses_globals(tmp_path):
    from loradyn.vit.data import safe_unpickle

    ok = tmp_path / "ok"
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 4, 5):
        ok.write_bytes(pickle.dumps({"data": arr, b"k": [1, 2.5, None, (True,)],
                                     "n": np.int64(3)}, protocol=proto))
        back = safe_unpickle(ok)
        np.testing.assert_array_equal(back["data"], arr)
        assert back[b"k"] == [1, 2.5, None, (True,)] and back["n"] == 3
    bad = tmp_path / "bad"
    for obj in (_Payload(tmp_path / "x"), print, Path("x"), {"f": eval}):
        bad.write_bytes(pickle.dumps(obj))
        with pytest.raises(LoradynError, match="not a plain data pickle"):
            safe_unpickle(bad)
    assert not (tmp_path / "x").exists()
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(LoradynError, match="not a (plain|readable) data pickle"):
        safe_unpickle(bad)


# --------------------------------------------------------------------------- ViT run dir


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """One finished smoke run of the digits preset (made in-process, ~5 s)."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("peft")
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("vit") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["vit", "run", "--scale", "smoke", "--out", str(out), "--device", "cpu",
              "--threads", "1", "--no-amp"])
    assert exc.value.code == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, size: int = 40) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:size])


def test_corrupt_checkpoint_heals_on_rerun_through_the_cli(vit_run, tmp_path):
    out = _copy(vit_run, tmp_path / "run")
    ck = out / "pretrain" / "seed0" / "ckpt_001.pt"
    _truncate(ck)
    table = (vit_run / "table.csv").read_text()
    res = _cli("vit", "run", "--scale", "smoke", "--out", str(out), "--device", "cpu",
               "--threads", "1", "--no-amp")
    assert res.returncode == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "ckpt_001.pt" in warn[0] and "redone" in warn[0], res.stderr
    assert "Traceback" not in res.stderr
    assert (out / "pretrain" / "seed0" / "ckpt_001.pt.corrupt").exists()
    assert (out / "table.csv").read_text() == table  # redone bit for bit


def _ft_key(out, ckpt):
    from loradyn.vit.config import finetune_key
    from loradyn.vit.rundir import load_run_config

    return finetune_key(load_run_config(out), ckpt, 0, "cpu")


# fine-tune results live in the run's result store (results/KEY.nc; a corrupt one is moved
# to corrupt/KEY.nc), their resume states in finetune/KEY.state.pt
@pytest.mark.parametrize("name", ["config.json", "pretrain/seed0/history.nc", "result",
                                  "state"])
def test_corrupt_run_files_heal_on_rerun(vit_run, tmp_path, capsys, name):
    out = _copy(vit_run, tmp_path / "run")
    if name == "state":  # an interrupted fine-tune whose resume state was damaged
        key = _ft_key(out, 1)
        (out / "results" / f"{key}.nc").unlink()
        (out / "finetune").mkdir(exist_ok=True)
        (out / "finetune" / f"{key}.state.pt").write_bytes(b"PK\x03\x04trunc")
        name = f"finetune/{key}.state.pt"
        aside = out / (name + ".corrupt")
    elif name == "result":
        name = f"results/{_ft_key(out, 2)}.nc"
        _truncate(out / name)
        aside = out / "corrupt" / Path(name).name
    else:
        _truncate(out / name)
        aside = out / (name + ".corrupt")
    code, _, err = _run(["vit", "run", "--scale", "smoke", "--out", str(out), "--device",
                         "cpu", "--threads", "1", "--no-amp"], capsys)
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and Path(name).name in warn[0], err
    assert aside.exists()
    assert (out / "table.csv").read_text() == (vit_run / "table.csv").read_text()


def test_vit_diverging_or_empty_training_is_an_error(vit_run, tmp_path, capsys):
    from loradyn.vit.presets import get_preset

    cfg = get_preset("digits-shifted", "smoke").to_dict()
    cfg["finetune"]["lr"] = 1e10
    cfg["pretrain"]["lr"] = 1e10
    path = tmp_path / "diverge.json"
    path.write_text(json.dumps(cfg))
    code, _, err = _run(["vit", "run", "--config", str(path), "--out", str(tmp_path / "d"),
                         "--device", "cpu", "--threads", "1", "--no-amp"], capsys)
    assert code == 2 and "diverged" in _one_error_line(err)
    assert not (tmp_path / "d" / "table.csv").exists()
    for field, value in (("batch_size", -5), ("lr", float("nan")), ("epochs", 2.5)):
        bad = get_preset("digits-shifted", "smoke").to_dict()
        bad["finetune"][field] = value
        path.write_text(json.dumps(bad))
        code, _, err = _run(["vit", "run", "--config", str(path), "--out",
                             str(tmp_path / "e"), "--device", "cpu"], capsys)
        assert code == 2 and field in _one_error_line(err), (field, err)


# --------------------------------------------------------------------------- values


def test_simulate_divergence_is_flagged_through_the_cli():
    res = _cli("simulate", "--teacher", "linear", "--lr", "1e6", "--steps", "50", "--d", "100",
               "--batch", "10", "--seeds", "2")
    assert res.returncode == 2 and "diverged" in _one_error_line(res.stderr)


@pytest.mark.parametrize("argv", [
    ["simulate", "--teacher", "erf", "--engine", "ode", "--lr", "1e6", "--steps", "1000",
     "--format", "json"],
    ["twolayer", "simulate", "--engine", "ode", "--lr", "1e300", "--steps", "100"],
])
def test_ode_engines_do_not_hang_on_huge_learning_rates(argv, capsys):
    import time

    t0 = time.perf_counter()
    code, out, err = _run(argv, capsys)
    assert time.perf_counter() - t0 < 20
    if argv[0] == "twolayer":  # blows up at once, reported as the SGD engines do
        assert code == 2 and "diverged" in _one_error_line(err)
    else:  # stiff, not divergent: the ODE settles on a fixed point, far from escape
        assert code == 0, err
        run = json.loads(out)["runs"][0]
        assert run["escape_steps"] == [None] or run["escape_steps"] == [-1]


def test_python_api_type_errors_are_loradyn_errors():
    from loradyn import RunConfig, register_activation, tau
    from loradyn.vit.config import ExperimentConfig

    calls = [
        lambda: tau("erf", "abc"),
        lambda: RunConfig.from_dict(None),
        lambda: RunConfig.from_json(None),
        lambda: register_activation(None, np.tanh, np.tanh),
        lambda: register_activation("fresh_name", None, np.tanh),
        lambda: RunConfig(lr="0.2"),
        lambda: RunConfig(d="1000"),
        lambda: RunConfig(u0="1"),
        lambda: RunConfig(threshold=True),
        lambda: RunConfig(student=""),
        lambda: RunConfig(label=""),
        lambda: loradyn.flow(None, 1.0, 0.1, 0.5),
        lambda: loradyn.exit_time(1.0, "a"),
        lambda: ExperimentConfig.from_dict(None),
        lambda: ExperimentConfig.from_dict({"source": []}),
    ]
    for call in calls:
        with pytest.raises(LoradynError):
            call()


# --------------------------------------------------------------------------- systematic


def _tour():
    spec = importlib.util.spec_from_file_location("bad_input_tour",
                                                  ROOT / "scripts" / "bad_input_tour.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bad_input_tour"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_systematic_bad_values_of_every_fast_option_are_clean(tmp_path, capsys):
    """Every option of tau, singularities, hermite, simulate, escape and twolayer
    tau/simulate/escape,
    tried missing, empty, of the wrong type, NaN, inf, negative, zero, huge and as a bad
    path: each ends clean (see scripts/bad_input_tour.py for the rule)."""
    tour = _tour()
    todo = [c for c in tour.cases(tmp_path, fast=True)
            if "1e300" not in c.label and "1000000000000" not in c.label]  # slow legit runs
    assert len(todo) >= 100
    bad = []
    for case in todo:
        case.limit = 60.0
        o = tour.run_case(case)
        if not o.clean:
            bad.append(f"{case.label}: {o.why()}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- outputs


def test_outputs_are_checked_before_the_run(tmp_path, capsys):
    sim = ["simulate", "--teacher", "linear", "--d", "50", "--batch", "10", "--steps", "20"]
    same = str(tmp_path / "x.png")
    for extra, word in (
        (["--out", same, "--plot", same], "same file"),
        (["--out", ""], "empty"),
        (["--out", str(tmp_path)], "directory"),
        (["--plot", str(tmp_path / "p.xyz")], ".xyz"),
        (["--out", str(tmp_path / "no" / "y.nc")], "folder"),
    ):
        code, out, err = _run(sim + extra, capsys)
        assert code == 2 and word in _one_error_line(err), (extra, err)
        assert not out and not Path(same).exists()


# --------------------------------------------------------------------------- reproduce


def _fake_figures(monkeypatch, fail: set[str]):
    """fig12 and fig13 replaced by instant figures (one PNG, one claim each)."""
    from loradyn.reproduce import registry
    from loradyn.reproduce.registry import Claim, FigureOutput, FigureSpec
    from loradyn.reproduce.runner import discover

    discover()  # import (and register) the real modules first, then replace two of them

    def maker(fid):
        def make(ctx):
            if fid in fail:
                raise RuntimeError(f"{fid} broke")
            f = ctx.figures_dir / f"{fid}.png"
            f.write_bytes(b"\x89PNG fake")
            return FigureOutput(f"caption {fid}", [f], [], [
                Claim(f"C-{fid}", "s", "statement", "measured", "expected", "holds")])
        return make

    for fid in ("fig12", "fig13"):
        monkeypatch.setitem(registry._FIGURES, fid, FigureSpec(fid, f"title {fid}", maker(fid)))


def test_partial_reproduce_rerun_merges_and_clears_stale_errors(tmp_path, monkeypatch):
    from loradyn.reproduce.runner import reproduce

    out = tmp_path / "rep"
    _fake_figures(monkeypatch, fail={"fig13"})
    first = reproduce(out, scale="test", only="fig12,fig13", progress=False)
    assert [i.id for i in first.failed] == ["fig13"] and (out / "fig13.error.txt").exists()
    _fake_figures(monkeypatch, fail=set())
    second = reproduce(out, scale="test", only="fig13", progress=False)
    assert (out / "fig13.error.txt").exists() is False  # stale error removed on success
    assert {i.id for i in second.done} == {"fig12", "fig13"}  # fig12 kept from the first run
    claims = (out / "claims.csv").read_text()
    assert "C-fig12" in claims and "C-fig13" in claims
    html = (out / "index.html").read_text()
    assert "figures/fig12.png" in html and "figures/fig13.png" in html
    # another seed is another report: nothing is carried over from it
    third = reproduce(out, scale="test", only="fig13", progress=False, seed=5)
    assert {i.id for i in third.done} == {"fig13"}


@pytest.mark.parametrize("argv, word", [
    (["reproduce", "--out", "", "--only", "fig8"], "empty"),
    (["reproduce", "--out", "REP", "--seed", "-1"], "--seed"),
    (["vit", "run", "--out", "", "--scale", "smoke"], "empty"),
    (["sweep", "run", "SPEC", "--out", ""], "empty"),
])
def test_empty_out_and_bad_seed_are_refused_before_any_work(argv, word, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SPEC").write_text("[sweep]\nname='x'\n[grid]\nmu=[0.5]\n")
    if argv[0] == "vit":
        pytest.importorskip("torch")
        pytest.importorskip("peft")
    code, _, err = _run(argv, capsys)
    assert code == 2 and word in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SPEC"]  # nothing written


# --------------------------------------------------------------------------- sweeps


SWEEP = """
[sweep]
name = "bad"
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


def test_sweep_scheduler_that_is_not_dask_or_inproc_is_one_line(tmp_path, capsys):
    """A TCP service that is not a Dask scheduler (it answers garbage) and an inproc://
    address: one line each, and nothing is written to --out."""
    pytest.importorskip("dask.distributed")
    import socket
    import threading

    import dask

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"\xff" * 64 + b"HTTP/1.1 400 Bad Request\r\n\r\n")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    try:
        for address in (f"tcp://127.0.0.1:{port}", "inproc://nothing"):
            out = tmp_path / "out"
            code, _, err = _run(["sweep", "run", str(spec), "--out", str(out), "--scheduler",
                                 address, "--no-progress"], capsys)
            assert code == 2, err
            assert "cannot connect to the Dask scheduler" in _one_error_line(err)
            assert not out.exists()
            assert dask.config.get("scheduler", None) is None
    finally:
        stop.set()
        th.join(timeout=5)
        srv.close()


def test_sweep_collect_into_the_sweep_is_refused(tmp_path, capsys):
    sweep_dir = tmp_path / "sw"
    sweep_dir.mkdir()
    (sweep_dir / "manifest.json").write_text("{}")
    code, _, err = _run(["sweep", "collect", str(sweep_dir), "--out",
                         str(sweep_dir / "manifest.json")], capsys)
    assert code == 2 and "inside the sweep directory" in _one_error_line(err)
    assert (sweep_dir / "manifest.json").read_text() == "{}"


def test_local_cluster_has_no_dashboard_and_stays_on_loopback():
    """The sweep's LocalCluster shows no dashboard; distributed's own HTTP service binds a
    free loopback port (never 8787 on every interface, no 'port in use' warning)."""
    pytest.importorskip("dask.distributed")
    import warnings

    from loradyn.sweep.runner import dask_client as _client

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _client(1, None, 1) as client:
            sched = client.cluster.scheduler
            assert sched.http_server.address == "127.0.0.1"
            assert sched.address.startswith("tcp://127.0.0.1:")
            assert not any(r.__class__.__name__.startswith("Bokeh") for r in
                           sched.services.values())
            assert client.submit(abs, -3).result() == 3
    assert not [w for w in caught if "already in use" in str(w.message)]


def test_full_disk_while_writing_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC (or any OSError) while writing the results: one line naming the file and
    saying what happened to the results, exit 2, no traceback."""
    import errno

    import loradyn.engines.results as results

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results, "save_netcdf", full)
    out = tmp_path / "x.nc"
    code, _, err = _run(["simulate", "--teacher", "linear", "--d", "50", "--batch", "10",
                         "--steps", "20", "--out", str(out)], capsys)
    line = _one_error_line(err)
    assert code == 2 and "No space left" in line and str(out) in line and "not saved" in line


def test_huge_worker_counts_are_refused_before_any_process_starts(tmp_path, capsys):
    # each local worker is a process: 1e12 of them exhausted the memory (the bad-input tour
    # was killed by the kernel); now a one-line error names the limit
    from loradyn.cli import main
    from loradyn.sweep.runner import max_local_workers

    top = max_local_workers()
    for argv in (["reproduce", "--workers", "1000000000000", "--scale", "test", "--only", "fig8",
                  "--out", str(tmp_path / "r"), "--no-progress"],
                 ["sweep", "run", str(tmp_path / "missing.toml"), "--workers", str(top + 1),
                  "--out", str(tmp_path / "s")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "too many local processes" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
