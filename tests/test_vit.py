"""ViT LoRA transfer protocol (issue 7): end-to-end digits run, CLI, resumability,
trainable-parameter check, configs. Budget: about a minute on 2 cores, one torch thread."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("peft")
pytest.importorskip("sklearn")

from loradyn.errors import LoradynError  # noqa: E402
from loradyn.store import code_hash  # noqa: E402
from loradyn.vit import train as T  # noqa: E402
from loradyn.vit.config import (  # noqa: E402
    DataSpec,
    ExperimentConfig,
    LoraSpec,
    ViTSpec,
    finetune_key,
)
from loradyn.vit.model import add_lora, build_vit, check_trainable  # noqa: E402
from loradyn.vit.presets import PRESETS, SCALES, get_preset  # noqa: E402
from loradyn.vit.table import decoupling, table_html  # noqa: E402

torch.set_num_threads(1)


def tiny(seeds=(0, 1), pt_epochs=3, ft_epochs=3) -> ExperimentConfig:
    cfg = get_preset("digits-shifted", "smoke")
    return replace(
        cfg,
        seeds=tuple(seeds),
        pretrain=replace(cfg.pretrain, epochs=pt_epochs, checkpoints=(1, pt_epochs)),
        finetune=replace(cfg.finetune, epochs=ft_epochs),
        report_epochs=(1, ft_epochs),
    )


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_digits_end_to_end_and_rerun_skips(tmp_path, monkeypatch):
    cfg = tiny()
    calls = []
    res = T.run_experiment(cfg, tmp_path, device="cpu",
                           progress=lambda f, m: calls.append(f))
    header = (tmp_path / "table.csv").read_text().splitlines()[0]
    assert header == ("task,checkpoint,source_acc_mean,source_acc_std,ft_acc_at_1_mean,"
                      "ft_acc_at_1_std,ft_acc_at_3_mean,ft_acc_at_3_std")
    rows = _read_csv(res.table)
    assert [int(r["checkpoint"]) for r in rows] == [1, 3]
    for r in rows:
        assert 0.0 <= float(r["source_acc_mean"]) <= 100.0
        assert float(r["ft_acc_at_3_std"]) >= 0.0
    assert res.figure is not None and res.figure.stat().st_size > 10_000
    assert calls and abs(calls[-1] - 1.0) < 1e-9 and calls == sorted(calls)
    # matched pre-training: one pre-training per seed, different source accuracies
    h0 = T._load_nc(T.pretrain_dir(tmp_path, 0) / "history.nc")
    h1 = T._load_nc(T.pretrain_dir(tmp_path, 1) / "history.nc")
    assert not np.array_equal(h0["test_acc"].values, h1["test_acc"].values)
    # the table's source accuracy is the mean over the seeds' checkpoints
    want = 50 * (h0["test_acc"].sel(epoch=3) + h1["test_acc"].sel(epoch=3))
    assert float(rows[1]["source_acc_mean"]) == pytest.approx(float(want), abs=0.006)
    # the fine-tune results live in the run directory's result store, keyed by finetune_key
    ds = T._load_nc(T.finetune_result_path(tmp_path, cfg, 3, 1, "cpu"))
    assert sorted(p.name for p in (tmp_path / "results").glob("*.nc")) == sorted(
        f"{finetune_key(cfg, c, s, 'cpu')}.nc" for c in (1, 3) for s in (0, 1))
    assert not list((tmp_path / "finetune").glob("*.nc"))
    assert ds.attrs["head_reinit"] == 0  # digits -> shifted digits keeps the label space
    assert ds.attrs["trainable_lora"] > 0 and ds.attrs["trainable_head"] > 0
    assert ds["test_acc"].sizes["epoch"] == 4
    # the one key and the code hash, as every result of the store records them
    assert ds.attrs["result_key"] == finetune_key(cfg, 3, 1, "cpu")
    assert ds.attrs["code_hash"] == code_hash()
    assert not list(tmp_path.rglob("*.state.pt")) and not list(tmp_path.rglob("state.pt"))
    html = table_html(res.rows, cfg.report_epochs)
    assert html.startswith("<table") and "&plusmn;" in html
    d = decoupling(res.rows, 3)
    assert d["latest"] == 3 and isinstance(d["holds"], bool)

    # two sweep workers that merge their seed into config.json at once can drop one seed
    # there; the table still counts every finished fine-tune
    stored = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**stored, "seeds": [0]}))
    from loradyn.vit.table import table_rows

    assert [r["n_seeds"] for r in table_rows(tmp_path)] == [2, 2]
    (tmp_path / "config.json").write_text(json.dumps(stored))

    # a rerun trains nothing
    def boom(*a, **k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(T, "_train_epoch", boom)
    res2 = T.run_experiment(cfg, tmp_path, device="cpu")
    assert res2.rows == res.rows


def test_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    cfg = tiny(seeds=(0,), pt_epochs=4, ft_epochs=4)
    ref = T.run_experiment(cfg, tmp_path / "ref", device="cpu", figure=False)

    real = T._train_epoch
    count = {"n": 0}

    def dies_at(k):
        def f(*a, **kw):
            count["n"] += 1
            if count["n"] == k:
                raise KeyboardInterrupt
            return real(*a, **kw)
        return f

    out = tmp_path / "cut"
    # killed during pre-training epoch 3, then during the 2nd fine-tune's epoch 2
    for k in (3, 2 + 4 + 2):
        count["n"] = 0
        monkeypatch.setattr(T, "_train_epoch", dies_at(k))
        with pytest.raises(KeyboardInterrupt):
            T.run_experiment(cfg, out, device="cpu", figure=False)
    assert (T.pretrain_dir(out, 0) / "history.nc").exists()
    assert list((out / "finetune").glob("*.state.pt")), "fine-tune state was not saved"
    # resume: the epochs already done are not redone
    count["n"] = 0
    monkeypatch.setattr(T, "_train_epoch", dies_at(10**9))
    res = T.run_experiment(cfg, out, device="cpu", figure=False)
    assert count["n"] == 4 - 1  # 2nd fine-tune: epochs 2..4 (epoch 1 was saved)
    assert res.rows == ref.rows
    for c in cfg.pretrain.checkpoints:
        a = T._load_nc(T.finetune_result_path(tmp_path / "ref", cfg, c, 0, "cpu"))
        b = T._load_nc(T.finetune_result_path(out, cfg, c, 0, "cpu"))
        np.testing.assert_array_equal(a["test_loss"].values, b["test_loss"].values)


def test_cli_run_steps_and_errors(tmp_path, capsys):
    from loradyn.cli import main

    def cli(*args):
        with pytest.raises(SystemExit) as e:
            main(list(args))
        return e.value.code

    out = tmp_path / "run"
    assert cli("vit", "run", "--preset", "digits-shifted", "--scale", "smoke", "--seeds",
               "0,1", "--out", str(out), "--device", "cpu", "--threads", "1") == 0
    text = capsys.readouterr().out
    assert "task,checkpoint,source_acc_mean" in text
    assert len(_read_csv(out / "table.csv")) == 2
    # separate steps into another directory give the same table
    out2 = tmp_path / "steps"
    base = ("--preset", "digits-shifted", "--scale", "smoke", "--out", str(out2),
            "--device", "cpu")
    for s in ("0", "1"):
        assert cli("vit", "pretrain", *base, "--seed", s) == 0
    assert cli("vit", "finetune", *base, "--seeds", "0,1") == 0
    assert cli("vit", "table", "--out", str(out2), "--no-figure") == 0
    assert (out2 / "table.csv").read_text() == (out / "table.csv").read_text()
    # a JSON config (here: the stored one) runs the same experiment
    out3 = tmp_path / "json"
    assert cli("vit", "run", "--config", str(out / "config.json"), "--out", str(out3),
               "--device", "cpu") == 0
    assert (out3 / "table.csv").read_text() == (out / "table.csv").read_text()
    capsys.readouterr()
    # user errors: one line, exit code 2
    assert cli("vit", "table", "--out", str(tmp_path / "nothing")) == 2
    assert cli("vit", "run", "--preset", "nope", "--out", str(tmp_path / "x")) == 2
    assert cli("vit", "run", "--preset", "emnist-fashion", "--scale", "smoke", "--out",
               str(out)) == 2  # another experiment in the same directory
    assert cli("vit", "run", "--preset", "emnist-fashion", "--scale", "smoke", "--out",
               str(tmp_path / "e"), "--data-dir", str(tmp_path / "empty"),
               "--device", "cpu") == 2  # no data, no download
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert cli("vit", "run", "--preset", "digits-shifted", "--scale", "smoke", "--out",
               str(blocker), "--device", "cpu") == 2  # --out is a file
    assert cli("vit", "finetune", *base, "--checkpoints", ",") == 2  # was: nothing, exit 0
    assert cli("vit", "run", *base, "--threads", "-1") == 2  # was silently ignored
    err = capsys.readouterr().err
    assert err.count("error:") == 7 and "Traceback" not in err


def _rows(src, ft):
    return [{"checkpoint": c, "source_acc_mean": a, "ft_acc_at_5_mean": f}
            for c, a, f in zip((1, 3, 9), src, ft, strict=True)]


def test_decoupling_verdict():
    """The Table 1 claim can hold and fail; a tie counts against it."""
    d = decoupling(_rows((50, 70, 90), (60, 65, 55)), 5)
    assert d["holds"] and d["best_downstream"] == 3 and d["gap"] == 10
    assert not decoupling(_rows((50, 70, 90), (40, 50, 60)), 5)["holds"]  # latest best FT
    assert not decoupling(_rows((50, 95, 90), (60, 65, 55)), 5)["holds"]  # not best source
    tie = decoupling(_rows((50, 70, 90), (60, 70, 70)), 5)
    assert not tie["latest_not_best_downstream"] and not tie["holds"]
    assert decoupling(_rows((90, 70, 90), (60, 70, 50)), 5)["holds"]  # shared best source


def test_only_lora_and_head_train():
    spec = ViTSpec(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=2, num_heads=2)
    m = add_lora(build_vit(spec, 10), LoraSpec(rank=2, alpha=4.0))
    counts = check_trainable(m)
    # qkv (16 -> 48) and proj (16 -> 16) per block, rank 2: A is r x in, B is out x r
    assert counts["lora"] == 2 * (2 * 16 + 48 * 2 + 2 * 16 + 16 * 2)
    assert counts["head"] == 16 * 10 + 10
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert not any("patch_embed" in n for n in names)
    only_qkv = add_lora(build_vit(spec, 10), LoraSpec(rank=2, target_modules=("qkv",)))
    assert check_trainable(only_qkv)["lora"] == 2 * (2 * 16 + 48 * 2)
    # unfreezing any backbone parameter is caught
    m.get_parameter("base_model.model.blocks.0.norm1.weight").requires_grad_(True)
    with pytest.raises(AssertionError, match="outside LoRA"):
        check_trainable(m)


def test_head_reinit_rules_and_frozen_backbone(tmp_path):
    cfg = tiny(seeds=(0,), pt_epochs=1, ft_epochs=1)
    assert not T.head_reinitialized(cfg)
    other = replace(cfg, target=DataSpec("fashionmnist"))
    assert T.head_reinitialized(other)
    assert T.head_reinitialized(replace(cfg, finetune=replace(cfg.finetune,
                                                              reinit_head="always")))
    always = replace(cfg, finetune=replace(cfg.finetune, reinit_head="always"))
    T.pretrain(cfg, tmp_path / "auto", 0, device="cpu")
    with pytest.raises(LoradynError, match="another configuration"):
        T.finetune(always, tmp_path / "auto", 1, 0, device="cpu")
    T.pretrain(always, tmp_path / "always", 0, device="cpu")
    ds = T.finetune(always, tmp_path / "always", 1, 0, device="cpu")
    assert ds.attrs["head_reinit"] == 1
    ck = torch.load(T.checkpoint_path(tmp_path / "always", 0, 1), weights_only=True)
    assert ds.attrs["source_acc"] == ck["source_acc"]
    with pytest.raises(LoradynError, match="not one of the pre-training checkpoints"):
        T.finetune(cfg, tmp_path / "auto", 7, 0, device="cpu")


def test_vit_keys_come_from_the_one_hash():
    from loradyn.params import content_hash
    from loradyn.sweep.spec import task_key
    from loradyn.vit.config import finetune_key
    from loradyn.vit.sweep import key as vit_key

    cfg = get_preset("digits-shifted", "smoke")
    d = cfg.to_dict()
    for k in ("seeds", "report_epochs", "scale", "name"):
        d.pop(k)
    assert cfg.work_key() == content_hash({"class": "ExperimentConfig", "config": d})
    # seeds and reports do not name the trained models
    assert cfg.with_seeds((7,)).work_key() == cfg.work_key()
    ck = cfg.pretrain.checkpoints[0]
    params = {"preset": "digits-shifted", "scale": "smoke", "run_dir": "a", "checkpoint": ck,
              "seed": 1, "device": "cpu"}
    k = vit_key(params, "torch")
    assert k == finetune_key(cfg, ck, 1, "cpu") == task_key("vit", "torch", params)
    # where the run lives changes no number; the seed and the device do
    assert vit_key({**params, "run_dir": "b", "data_dir": "/x"}, "torch") == k
    assert vit_key({**params, "seed": 2}, "torch") != k
    assert vit_key({**params, "device": "cuda"}, "torch") != k


def test_presets_and_config_roundtrip():
    for name in PRESETS:
        for scale in SCALES:
            cfg = get_preset(name, scale)
            back = ExperimentConfig.from_dict(json.loads(cfg.to_json()))
            assert back == cfg and back.work_key() == cfg.work_key()
            assert set(cfg.report_epochs) <= set(range(cfg.finetune.epochs + 1))
    assert get_preset("emnist-fashion", "paper").pretrain.checkpoints == (2, 5, 100)
    assert get_preset("cifar10-svhn", "paper").pretrain.checkpoints == (50, 100, 200)
    a, b = get_preset("digits-shifted", "quick"), get_preset("digits-shifted", "paper")
    assert a.work_key() != b.work_key()
    with pytest.raises(LoradynError):
        get_preset("digits-shifted", "huge")
    # hand-edited JSON of the wrong shape or type: one-line errors, not TypeError/ValueError
    with pytest.raises(LoradynError, match="invalid experiment config"):
        ExperimentConfig.from_dict([1, 2])
    with pytest.raises(LoradynError, match="seeds must be a list of integers"):
        ExperimentConfig.from_dict({**a.to_dict(), "seeds": "abc"})
    with pytest.raises(LoradynError, match="multiple of patch_size"):
        ViTSpec(img_size=8, patch_size=3)
    with pytest.raises(LoradynError, match="report epochs"):
        replace(a, report_epochs=(a.finetune.epochs + 1,))


def test_import_loradyn_vit_is_light():
    code = "import sys, loradyn, loradyn.vit, loradyn.cli; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_reproduce_items_at_test_scale(tmp_path):
    from loradyn.reproduce import fig12, table1
    from loradyn.reproduce.registry import FigureContext

    seen = []
    ctx = FigureContext(out=tmp_path, scale="test", progress=lambda f, m="": seen.append(f))
    fo = fig12.make(ctx)
    assert all(f.exists() for f in fo.files)
    assert [f.suffix for f in fo.files] == [".png", ".pdf"]  # like every reproduce figure
    to = table1.make(ctx)  # reuses the run made by fig12
    assert to.kind == "table" and to.html.startswith("<table")
    (claim,) = to.claims
    assert claim.id == "J1"
    rows = _read_csv(to.data[0])
    src = {int(r["checkpoint"]): float(r["source_acc_mean"]) for r in rows}
    latest = max(src)
    # one seed at the smoke scale: no standard error, so never "holds"
    expect = "inconclusive" if src[latest] >= max(src.values()) else "fails"
    assert claim.verdict == expect
    assert "2 s.e." in claim.measured
    assert seen and max(seen) == 1.0


def test_sweep_kind_runs_the_finetune_grid(tmp_path, monkeypatch):
    from loradyn.sweep import collect, run_sweep

    monkeypatch.setenv("LORADYN_SWEEP_PLUGINS", "loradyn.vit.sweep")
    run_dir = tmp_path / "vit"
    spec = {
        "sweep": {"name": "vit-grid", "kind": "vit"},
        "grid": {"checkpoint": [1, 2], "seed": [0, 1]},
        "fixed": {"preset": "digits-shifted", "scale": "smoke", "run_dir": str(run_dir),
                  "device": "cpu"},
    }
    st = run_sweep(spec, tmp_path / "sweep", workers=1)
    assert not st.failed, st.failed
    ds = collect(tmp_path / "sweep")
    assert ds["test_acc"].sizes == {"checkpoint": 2, "seed": 2, "epoch": 3}
    # the same run directory gives the Table-1 CSV, with the sweep's numbers
    from loradyn.vit.table import write_table

    _, rows = write_table(run_dir, seeds=(0, 1))
    got = float(ds["test_acc"].sel(checkpoint=2, epoch=2).mean()) * 100
    assert rows[1]["ft_acc_at_2_mean"] == pytest.approx(got)
    bad = dict(spec, fixed=dict(spec["fixed"], preset="nope"))
    with pytest.raises(LoradynError, match="unknown preset"):
        run_sweep(bad, tmp_path / "sweep2", workers=1)


def test_j1_needs_two_standard_errors_over_independent_pretrainings():
    from loradyn.reproduce.table1 import j1_verdict

    lat = {"ft_acc_at_5_mean": 70.0, "ft_acc_at_5_std": 2.0}
    best = {"ft_acc_at_5_mean": 75.0, "ft_acc_at_5_std": 2.0}
    # gap 5, s.e. sqrt(8)/sqrt(5) = 1.26: holds with 5 independent pre-trainings
    assert j1_verdict(lat, best, 5, 5, True, True)[0] == "holds"
    # the same numbers from seeds that share one pre-training cannot decide
    assert j1_verdict(lat, best, 5, 5, False, True)[0] == "inconclusive"
    # a gap within 2 standard errors
    noisy = {"ft_acc_at_5_mean": 75.0, "ft_acc_at_5_std": 6.0}
    assert j1_verdict(lat, noisy, 5, 3, True, True)[0] == "inconclusive"
    # the latest checkpoint is not the best at the source: the premise fails
    assert j1_verdict(lat, best, 5, 5, True, False)[0] == "fails"


def test_torch_threads_policy():
    """1 thread on a CPU unless asked; the caller's count is restored; bad counts are errors."""
    old = torch.get_num_threads()
    with T.torch_threads(None, "cpu") as n:
        assert n == T.CPU_THREADS == torch.get_num_threads()
    with T.torch_threads(0, "cpu") as n:
        assert n == T.CPU_THREADS
    with T.torch_threads(3, "cpu"):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == old
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(LoradynError, match="threads"), T.torch_threads(bad, "cpu"):
            pass
    assert torch.get_num_threads() == old


def _count_training(monkeypatch):
    """Count the training epochs run from now on (``_train_epoch`` calls)."""
    real = T._train_epoch
    count = {"n": 0}

    def counted(*a, **kw):
        count["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(T, "_train_epoch", counted)
    return count


def _made_by_other_code(path):
    """Rewrite a stored result as if another version of the numerical code had made it."""
    from loradyn.io import save_netcdf

    ds = T._load_nc(path)
    ds.attrs["code_hash"] = "0" * 16
    save_netcdf(ds, path)


def test_finetune_store_reuses_recomputes_other_code_and_heals(tmp_path, monkeypatch):
    """A stored fine-tune is served without training; one made by other code is
    recomputed unless reuse_other_code; a corrupt one is set aside and redone."""
    from loradyn.vit.rundir import CorruptFileWarning
    from loradyn.vit.table import write_table

    cfg = tiny(seeds=(0,), pt_epochs=1, ft_epochs=2)
    out = tmp_path / "run"
    T.pretrain(cfg, out, 0, device="cpu")
    count = _count_training(monkeypatch)
    first = T.finetune(cfg, out, 1, 0, device="cpu")
    assert count["n"] == 2
    path = T.finetune_result_path(out, cfg, 1, 0, "cpu")
    assert path == out / "results" / f"{finetune_key(cfg, 1, 0, 'cpu')}.nc"
    stamp = path.stat().st_mtime_ns
    # finished: served from the store, nothing trained or rewritten
    again = T.finetune(cfg, out, 1, 0, device="cpu")
    assert count["n"] == 2 and path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again["test_acc"].values, first["test_acc"].values)
    assert T.finetune_all(cfg, out, (1,), (0,), device="cpu") == [path]
    assert count["n"] == 2

    # made by other code: the table counts it as unfinished, the flag keeps it
    _made_by_other_code(path)
    with pytest.raises(LoradynError, match="other number-computing code.*--reuse-other-code"):
        write_table(out, seeds=(0,))
    _, rows = write_table(out, seeds=(0,), reuse_other_code=True)
    assert rows[0]["ft_acc_at_2_mean"] == pytest.approx(100 * float(first["test_acc"][-1]))
    kept = T.finetune(cfg, out, 1, 0, device="cpu", reuse_other_code=True)
    assert count["n"] == 2 and kept.attrs["code_hash"] == "0" * 16
    # ... and without the flag it is recomputed (same numbers: the code did not change)
    redone = T.finetune(cfg, out, 1, 0, device="cpu")
    assert count["n"] == 4 and redone.attrs["code_hash"] == code_hash()
    assert T._load_nc(path).attrs["code_hash"] == code_hash()
    np.testing.assert_array_equal(redone["test_acc"].values, first["test_acc"].values)

    # corrupt: moved to out/corrupt with one warning, redone
    path.write_bytes(b"CDF\x01 truncated")
    with pytest.warns(CorruptFileWarning, match=path.name):
        healed = T.finetune(cfg, out, 1, 0, device="cpu")
    assert count["n"] == 6 and (out / "corrupt" / path.name).exists()
    np.testing.assert_array_equal(healed["test_acc"].values, first["test_acc"].values)

    # an older run directory (finetune/p<P>_ckpt<EEE>_seed<S>.nc) is still read; a result
    # of this code found there is adopted into the store without training
    legacy = T.finetune_path(out, 0, 1, 0)
    legacy.parent.mkdir(exist_ok=True)
    path.replace(legacy)
    _, rows2 = write_table(out, seeds=(0,))
    assert rows2 == rows
    T.finetune(cfg, out, 1, 0, device="cpu")
    assert count["n"] == 6 and path.exists() and legacy.exists()


def test_pretraining_of_other_code_is_redone_unless_reused(tmp_path, monkeypatch):
    """A finished pre-training made by other number-computing code is redone (same
    numbers: the code did not change); with reuse_other_code it is served as it is."""
    cfg = tiny(seeds=(0,), pt_epochs=2, ft_epochs=1)
    out = tmp_path / "run"
    first = T.pretrain(cfg, out, 0, device="cpu")
    count = _count_training(monkeypatch)
    T.pretrain(cfg, out, 0, device="cpu")
    assert count["n"] == 0  # finished, this code: served
    hist = T.pretrain_dir(out, 0) / "history.nc"
    _made_by_other_code(hist)
    kept = T.pretrain(cfg, out, 0, device="cpu", reuse_other_code=True)
    assert count["n"] == 0 and kept.attrs["code_hash"] == "0" * 16
    redone = T.pretrain(cfg, out, 0, device="cpu")
    assert count["n"] == 2 and redone.attrs["code_hash"] == code_hash()
    np.testing.assert_array_equal(redone["test_acc"].values, first["test_acc"].values)
