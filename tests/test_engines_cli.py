"""``loradyn simulate``: JSON output, netCDF/plot files, exit code 2 on bad input.

Budget: about 30 s (two subprocesses, dominated by interpreter start-up).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loradyn.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from loradyn.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


def test_cli_json_and_files(tmp_path):
    out, png = tmp_path / "run.nc", tmp_path / "run.png"
    r = _run("simulate", "--engine", "reduced", "--teacher", "linear", "--mu", "0.2,0.5",
             "--d", "200", "--lr", "0.2", "--batch", "50", "--steps", "200", "--seeds", "3",
             "--format", "json", "--out", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert list(data) == ["runs"]
    assert [run["mu"] for run in data["runs"]] == [0.2, 0.5]
    for run in data["runs"]:
        assert list(run) == ["mu", "escape_steps", "final_abs_m"]
        assert len(run["escape_steps"]) == 3
        assert all(e is None or (isinstance(e, int) and e >= 0) for e in run["escape_steps"])
        assert all(0.0 <= v <= 1.0 for v in run["final_abs_m"])
    assert out.stat().st_size > 0 and png.stat().st_size > 0


def test_cli_bad_input_exit_2():
    r = _run("simulate", "--teacher", "linear", "--mu", "1.5", "--steps", "10")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "mu" in lines[0]


@pytest.mark.parametrize(
    "args, word",
    [
        (["--teacher", "nope"], "unknown activation"),
        (["--teacher", "linear", "--lr", "-1"], "lr"),
        (["--teacher", "linear", "--d", "2"], "d = 2"),
        (["--teacher", "linear", "--engine", "fast"], "engine"),
        (["--teacher", "he5", "--lr", "100", "--steps", "30", "--d", "100", "--batch", "10"],
         "every trajectory diverged"),
    ],
)
def test_cli_errors_in_process(args, word, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and word in err[0]


def test_cli_partial_divergence_warns_once(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--teacher", "he3", "--mu", "0.5", "--d", "300", "--batch", "50",
              "--lr", str(0.2 / 18), "--steps", "300", "--seeds", "20", "--format", "json"])
    assert exc.value.code == 0
    cap = capsys.readouterr()
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "reduce --lr" in warn[0]
    json.loads(cap.out)


@pytest.mark.parametrize(
    "exc",
    [MemoryError("Unable to allocate 3.64 TiB for an array"),
     ValueError("Maximum allowed dimension exceeded")],
)
def test_cli_run_too_large_for_memory_is_one_line_error(exc, capsys, monkeypatch):
    """A run that does not fit in memory (e.g. dense --d 1e9) is a user error, not a traceback."""
    import loradyn.engines

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(loradyn.engines, "simulate", boom)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--teacher", "linear", "--engine", "dense", "--d", "1000000000",
              "--steps", "2"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "memory" in err[0]


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_cli_missing_output_folder_is_reported_before_the_run(option, tmp_path, capsys,
                                                               monkeypatch):
    """A long run must not be computed and then lost because --out's folder is missing."""
    import loradyn.engines

    def must_not_run(*args, **kwargs):
        raise AssertionError("simulate ran before the output folder was checked")

    monkeypatch.setattr(loradyn.engines, "simulate", must_not_run)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--teacher", "linear", "--steps", "10",
              option, str(tmp_path / "missing" / "run.x")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "does not exist" in err[0]


def test_cli_dense_torch_float32(tmp_path, capsys):
    """``simulate --engine dense --backend torch --dtype float32`` runs and records float32."""
    pytest.importorskip("torch")
    import xarray as xr

    from loradyn.config import RunConfig

    out = tmp_path / "f32.nc"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--engine", "dense", "--backend", "torch", "--device", "cpu",
              "--dtype", "float32", "--teacher", "erf", "--mu", "0.2", "--d", "100",
              "--batch", "20", "--steps", "150", "--seeds", "4", "--format", "json",
              "--out", str(out)])
    assert exc.value.code == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert len(runs[0]["escape_steps"]) == 4 and any(e is not None for e in runs[0]["escape_steps"])
    with xr.open_dataset(out) as ds:
        cfg = RunConfig.from_json(ds.attrs["config"])
        assert (cfg.dtype, cfg.backend, ds.attrs["backend"]) == ("float32", "torch", "torch:cpu")
        assert ds["m"].dtype == "float64"
        assert ds.attrs["config_key"] == cfg.key() != cfg.replace(dtype="float64").key()


@pytest.mark.parametrize(
    "args, word",
    [(["--dtype", "float16"], "dtype"),
     (["--dtype", "float32", "--lr", "1e-7"], "float32 cannot resolve")],
)
def test_cli_dtype_errors(args, word, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--engine", "dense", "--teacher", "linear", "--d", "50",
              "--batch", "5", "--steps", "3", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and word in err[0]
