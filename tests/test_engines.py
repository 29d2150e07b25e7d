"""Engines: dense vs reduced in law (KS), ODE limit, determinism, variants, divergence.

Budget: about 1.5 minutes on one core (the dense runs dominate).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from scipy.stats import ks_2samp

from loradyn.config import RunConfig
from loradyn.engines import DivergenceWarning, escape_steps_json, runs_json, simulate
from loradyn.engines.reduced import gram_applies
from loradyn.errors import DivergenceError, LoradynError

ALPHA = 0.01


def _escapes(ds: xr.Dataset, steps: int) -> np.ndarray:
    """Escape steps, with no escape censored at ``steps + 1`` (same for both engines)."""
    e = np.asarray(ds["escape_step"].values, dtype=float).ravel()
    e[e < 0] = steps + 1
    return e


def _ks(cfg: RunConfig, a: str = "reduced", b: str = "dense", **kw_b) -> tuple[float, ...]:
    da = simulate(cfg, engine=a)
    db = simulate(cfg.replace(**kw_b) if kw_b else cfg, engine=b)
    ea, eb = _escapes(da, cfg.steps), _escapes(db, cfg.steps)
    # most trajectories must escape, or the test would compare censoring only
    assert (ea <= cfg.steps).mean() > 0.8 and (eb <= cfg.steps).mean() > 0.8
    return ks_2samp(ea, eb).pvalue, float(np.median(ea)), float(np.median(eb))


def test_ks_dense_vs_reduced_linear():
    """Linear, mu = 0.5, d = 300, batch 50, lr 0.2: escape steps agree in law."""
    cfg = RunConfig(teacher="linear", mu=0.5, d=300, batch=50, lr=0.2, steps=220, seeds=64,
                    record_every=110)
    assert gram_applies(cfg)  # the O(1) Gram sampler is the one compared with dense
    p, med_r, med_d = _ks(cfg)
    print(f"KS linear dense vs reduced: p = {p:.3f} (medians {med_r}, {med_d})")
    assert p > ALPHA


def test_ks_dense_vs_reduced_erf():
    """Nonlinear pair: erf, mu = 0.2, d = 300, batch 50, lr 0.2 (sample-based reduced)."""
    cfg = RunConfig(teacher="erf", mu=0.2, d=300, batch=50, lr=0.2, steps=250, seeds=64,
                    record_every=125)
    assert not gram_applies(cfg)
    p, med_r, med_d = _ks(cfg)
    print(f"KS erf dense vs reduced: p = {p:.3f} (medians {med_r}, {med_d})")
    assert p > ALPHA


def test_ks_gram_vs_samples_and_misaligned():
    """The Gram sampler and the explicit samples agree in law (aligned and misaligned)."""
    for pre, mu in (("aligned", 0.5), ("misaligned", 0.3)):
        cfg = RunConfig(teacher="linear", mu=mu, d=400, batch=40, lr=0.1, steps=800, seeds=100,
                        record_every=400, pretraining=pre, sampler="gram")
        p, *_ = _ks(cfg, "reduced", "reduced", sampler="samples")
        print(f"KS gram vs samples ({pre}): p = {p:.3f}")
        assert p > ALPHA


def test_misaligned_reduced_vs_dense():
    """Misaligned pre-training: escape steps agree in law; both reach the fixed point."""
    cfg = RunConfig(teacher="linear", mu=0.3, d=100, batch=20, lr=0.1, steps=400, seeds=100,
                    record_every=200, pretraining="misaligned")
    dr, dd = simulate(cfg, engine="reduced"), simulate(cfg, engine="dense")
    assert "p" in dr and "p" in dd
    p_esc = ks_2samp(_escapes(dr, cfg.steps), _escapes(dd, cfg.steps)).pvalue
    print(f"misaligned KS escape p = {p_esc:.3f}")
    assert p_esc > ALPHA
    # the fixed point: u w = w* - w0, so |m| -> sqrt((1 - mu) / 2), |p| -> sqrt((1 + mu) / 2)
    for ds in (dr, dd):
        am = np.abs(ds["m"].isel(step=-1).values)
        ap = np.abs(ds["p"].isel(step=-1).values)
        np.testing.assert_allclose(am, np.sqrt(0.7 / 2), atol=0.02)
        np.testing.assert_allclose(ap, np.sqrt(1.3 / 2), atol=0.02)


@pytest.mark.parametrize("sampler", ["gram", "samples"])
def test_ode_matches_reduced_seed_average(sampler):
    """At d = 1e5 the seed-average of reduced follows the ODE (with the finite-step term).

    Tolerance: at every recorded point |mean_seeds(m) - m_ode| <= 4 standard errors
    + 0.01 (same for u), and the median escape step within 3% of the ODE's.
    """
    seeds = 32 if sampler == "gram" else 8
    cfg = RunConfig(teacher="linear", mu=0.5, d=100_000, batch=1000, lr=0.02, steps=1800,
                    seeds=seeds, m0=1 / np.sqrt(100_000), record_every=20, sampler=sampler)
    dr, do = simulate(cfg, engine="reduced"), simulate(cfg, engine="ode")
    assert do.sizes["seed"] == 1
    for var in ("m", "u"):
        mean = dr[var].mean("seed").values[0]
        se = dr[var].std("seed").values[0] / np.sqrt(seeds)
        ode = do[var].values[0, 0]
        assert np.all(np.abs(mean - ode) <= 4 * se + 0.01), var
    med = np.median(dr["escape_step"].values)
    ode_esc = int(do["escape_step"].values[0, 0])
    assert abs(med - ode_esc) <= 0.03 * ode_esc
    # and the ODE's escape agrees with the search-phase theory tau*log(R sqrt(d)) to 3%
    assert abs(ode_esc - float(do["exit_step_theory"].values[0])) <= 0.03 * ode_esc


def test_determinism_and_independence_of_other_mu():
    cfg = RunConfig(teacher="erf", mu=[0.3, 0.6], d=50, batch=10, lr=0.1, steps=60, seeds=3)
    for engine in ("reduced", "dense"):
        a, b = simulate(cfg, engine=engine), simulate(cfg, engine=engine)
        for v in ("u", "m", "mse", "escape_step"):
            np.testing.assert_array_equal(a[v].values, b[v].values)
        # a trajectory depends on (mu, seed) only, not on the other mu of the run
        c = simulate(cfg.replace(mu=[0.6]), engine=engine)
        np.testing.assert_array_equal(a["m"].sel(mu=[0.6]).values, c["m"].values)
    # different seeds give different trajectories
    d2 = simulate(cfg.replace(seed0=5))
    assert not np.array_equal(d2["m"].values, a["m"].values)


def test_layout_and_attrs():
    cfg = RunConfig(teacher="linear", mu=[0.2, 0.5], d=100, batch=20, lr=0.1, steps=30,
                    seeds=2, record_every=7)
    for engine in ("reduced", "dense", "ode"):
        ds = simulate(cfg, engine=engine)
        assert ds["m"].dims == ("mu", "seed", "step")
        np.testing.assert_array_equal(ds["step"].values, [0, 7, 14, 21, 28, 30])
        np.testing.assert_allclose(ds["time"].values, ds["step"].values * 0.1)
        for v in ("u", "m", "c", "mse"):
            assert np.all(np.isfinite(ds[v].values)), v
        np.testing.assert_allclose(ds["c"].values, ds["mu"].values[:, None, None]
                                   + ds["u"].values * ds["m"].values)
        assert RunConfig.from_json(ds.attrs["config"]).engine == engine
        assert ds.attrs["config_key"] == RunConfig.from_json(ds.attrs["config"]).key()
        # escape conventions: -1 <=> NaN time <=> escaped False
        es, et = ds["escape_step"].values, ds["escape_time"].values
        assert np.array_equal(es < 0, np.isnan(et))
        assert np.array_equal(es >= 0, ds["escaped"].values)
        tau_lin = 2 / (np.sqrt(1 + 4 * (1 - np.array([0.2, 0.5])) ** 2) - 1)
        np.testing.assert_allclose(ds["tau_theory"].values, tau_lin, rtol=1e-10)
    js = escape_steps_json(ds)
    assert all(v is None or isinstance(v, int) for row in js for v in row)


@pytest.mark.parametrize(
    "kw",
    [dict(teacher="erf"), dict(teacher="relu", pretraining="misaligned"),
     dict(teacher="he3", student="erf", label="square"), dict(teacher="linear")],
)
def test_mse_is_exact_population_value(kw):
    """The recorded test MSE equals population(...).mse at the recorded (u, m[, p])."""
    from loradyn.population import population

    cfg = RunConfig(mu=0.4, d=100, batch=20, lr=0.05, steps=20, seeds=2, record_every=10, **kw)
    ds = simulate(cfg)
    p = ds["p"].values if "p" in ds else None
    ref = population(cfg.problem(), ds["u"].values, ds["m"].values, 0.4, p=p).mse
    np.testing.assert_allclose(ds["mse"].values, ref, rtol=1e-9, atol=1e-14)


def test_correlation_loss_run():
    """Correlation loss: reduced follows the ODE, including the decay of m after the escape.

    With ``l = -y yhat`` the scale u grows without bound, and the finite-step term
    ``(eta d / B)(m / 2) u^2 E[g^2]`` pulls m back down after the escape. The comparison
    stops at t = 12 (u ~ 4), where ``eta (eta d / B) u^2 E[g^2] ~ 0.3``: beyond that the
    second-order ODE term is no longer a small correction (documented in docs/engines.md).
    """
    cfg = RunConfig(teacher="linear", loss="correlation", mu=0.5, d=20_000, batch=400, lr=0.02,
                    steps=600, seeds=8, m0=1 / np.sqrt(20_000), record_every=50)
    dr, do = simulate(cfg), simulate(cfg, engine="ode")
    assert np.all(dr["escape_step"].values >= 0)
    am = np.abs(dr["m"].values[0]).mean(0)
    am_ode = np.abs(do["m"].values[0, 0])
    assert np.max(np.abs(am - am_ode)) < 0.03
    assert am_ode.max() > 0.6 and am_ode[-1] < am_ode.max() - 0.1  # escaped, then decayed
    esc_ode = int(do["escape_step"].values[0, 0])
    assert abs(np.median(dr["escape_step"].values) - esc_ode) <= 0.1 * esc_ode


def test_two_stage_schedule():
    """Square labels first, identity after |m| >= 0.3 (or at a fixed step)."""
    base = dict(teacher="erf", mu=0.5, d=1000, batch=200, lr=0.2, steps=1500, seeds=4,
                record_every=100,
                label="square", switch_label="identity")
    cfg = RunConfig(switch_m=0.3, **base)
    assert cfg.final_label == "identity"
    ds = simulate(cfg)
    sw, es = ds["switch_step"].values, ds["escape_step"].values
    assert np.all(sw >= 0) and np.all(es >= 0) and np.all(sw <= es)
    # at the switch, |m| had crossed 0.3: check on the recorded grid
    assert np.all(np.abs(ds["m"].isel(step=-1).values) > 0.9)
    assert np.all(ds["mse"].isel(step=-1).values < 1e-2)
    fixed = simulate(RunConfig(switch_step=40, **{**base, "steps": 100, "seeds": 2}))
    assert np.all(fixed["switch_step"].values == 40)
    ode = simulate(cfg, engine="ode")
    assert 0 <= ode["switch_step"].values[0, 0] <= ode["escape_step"].values[0, 0]
    # stage 1 differs from a plain identity-label run (square labels change the dynamics)
    plain = simulate(RunConfig(**{k: v for k, v in base.items()
                                  if k not in ("label", "switch_label")}))
    assert not np.array_equal(plain["escape_step"].values, es)


def test_divergence_partial_flagged_and_frozen():
    cfg = RunConfig(teacher="he3", mu=0.5, d=300, batch=50, lr=0.2 / 18, steps=300, seeds=20,
                    record_every=10)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = simulate(cfg)
    msgs = [w for w in rec if issubclass(w.category, DivergenceWarning)]
    div = ds["diverged"].values
    assert 0 < div.sum() < div.size
    assert len(msgs) == 1 and "\n" not in str(msgs[0].message)
    assert "reduce --lr" in str(msgs[0].message) and "mu=0.5" in str(msgs[0].message)
    for v in ("u", "m", "c"):
        assert not np.any(np.isnan(ds[v].values))
    assert not np.any(np.isnan(ds["mse"].values))
    i = int(np.argwhere(div[0])[0][0])
    ds_step = int(ds["diverge_step"].values[0, i])
    after = ds["step"].values >= ds_step
    u_tail = ds["u"].values[0, i, after]
    assert np.all(u_tail == u_tail[0])  # frozen at the last finite state
    assert np.all(ds["diverge_step"].values[~div] == -1)
    assert np.all(ds["diverge_step"].values[div] > 0)
    assert ds.attrs["n_diverged"] == int(div.sum()) and ds.attrs["warnings"]


def test_all_diverged_raises():
    cfg = RunConfig(teacher="he5", mu=0.5, d=100, batch=20, lr=50.0, steps=50, seeds=2)
    for engine in ("reduced", "dense"):
        with pytest.raises(DivergenceError, match="every trajectory diverged"):
            simulate(cfg, engine=engine)


def test_config_validation_and_roundtrip():
    cfg = RunConfig(teacher="he3", student="erf", mu=[0.1, 0.9], steps=100)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_json(cfg.to_json()).key() == cfg.key()
    assert cfg.key() != cfg.replace(lr=0.3).key()
    assert RunConfig(d=400).u0 == pytest.approx(0.05)
    assert RunConfig(teacher="x", student=None).student == "x"
    bad = [dict(mu=1.2), dict(mu=-0.1), dict(lr=0.0), dict(lr=-1), dict(d=2), dict(batch=0),
           dict(steps=0), dict(teacher="nope"), dict(student="he99"), dict(label="cube"),
           dict(loss="l1"), dict(engine="fast"), dict(update="x"), dict(m0=2.0),
           dict(switch_step=3), dict(switch_label="identity"), dict(threshold=0.0),
           dict(p0=0.1), dict(seed0=2**63), dict(seed0=2**63 - 2, seeds=3)]
    for kw in bad:
        with pytest.raises(LoradynError) as exc:
            RunConfig(**kw)
        assert "\n" not in str(exc.value)
    with pytest.raises(LoradynError):
        RunConfig.from_dict({"bogus": 1})


def test_runs_json_shape():
    cfg = RunConfig(teacher="linear", mu=[0.3, 0.6], d=100, batch=20, lr=0.2, steps=40, seeds=3)
    out = runs_json(simulate(cfg))
    assert [r["mu"] for r in out["runs"]] == [0.3, 0.6]
    for r in out["runs"]:
        assert set(r) == {"mu", "escape_steps", "final_abs_m"}
        assert len(r["escape_steps"]) == 3 and len(r["final_abs_m"]) == 3


def test_netcdf_roundtrip(tmp_path):
    from loradyn.engines.results import load_netcdf, save_netcdf

    cfg = RunConfig(teacher="linear", mu=[0.3], d=100, batch=20, lr=0.2, steps=40, seeds=2)
    ds = simulate(cfg)
    path = save_netcdf(ds, tmp_path / "run.nc")
    back = load_netcdf(path)
    assert back["diverged"].dtype == bool
    xr.testing.assert_allclose(back[["u", "m", "mse"]], ds[["u", "m", "mse"]])
    assert back.attrs["config"] == ds.attrs["config"]
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temp file left


def test_torch_backend_cpu_agrees_in_law():
    pytest.importorskip("torch")
    cfg = RunConfig(teacher="erf", mu=0.2, d=100, batch=20, lr=0.2, steps=200, seeds=48,
                    record_every=100, backend="torch", device="cpu")
    dt = simulate(cfg, engine="dense")
    assert dt.attrs["backend"] == "torch:cpu"
    again = simulate(cfg, engine="dense")
    np.testing.assert_array_equal(dt["m"].values, again["m"].values)
    dr = simulate(cfg, engine="reduced")
    p = ks_2samp(_escapes(dt, cfg.steps), _escapes(dr, cfg.steps)).pvalue
    print(f"KS torch dense vs reduced: p = {p:.3f}")
    assert p > ALPHA


_F32_REFS: dict[str, tuple[RunConfig, np.ndarray, np.ndarray]] = {}


def _f32_refs(teacher: str) -> tuple[RunConfig, np.ndarray, np.ndarray]:
    """Config and escape steps of the reduced and the dense float64 (numpy) engines."""
    if teacher not in _F32_REFS:
        mu = {"linear": 0.5, "erf": 0.2}[teacher]
        cfg = RunConfig(teacher=teacher, mu=mu, d=100, batch=20, lr=0.2, steps=200, seeds=64,
                        record_every=200)
        red = _escapes(simulate(cfg, engine="reduced"), cfg.steps)
        f64 = _escapes(simulate(cfg, engine="dense"), cfg.steps)
        _F32_REFS[teacher] = (cfg, red, f64)
    return _F32_REFS[teacher]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("teacher", ["linear", "erf"])
def test_float32_agrees_in_law_with_float64_and_reduced(teacher, backend):
    """Dense float32 escape steps vs dense float64 and vs reduced (KS, 64 seeds each)."""
    if backend == "torch":
        pytest.importorskip("torch")
    cfg, red, f64 = _f32_refs(teacher)
    ds = simulate(cfg.replace(dtype="float32", backend=backend, device="cpu"), engine="dense")
    assert ds.attrs["backend"] == ("torch:cpu" if backend == "torch" else "numpy")
    assert RunConfig.from_json(ds.attrs["config"]).dtype == "float32"
    for name in ("u", "m", "mse"):  # recorded in float64
        assert ds[name].dtype == np.float64
    f32 = _escapes(ds, cfg.steps)
    assert (f32 <= cfg.steps).mean() > 0.8 and (f64 <= cfg.steps).mean() > 0.8
    p64, pred = ks_2samp(f32, f64).pvalue, ks_2samp(f32, red).pvalue
    print(f"KS {teacher} {backend} float32 vs float64: p = {p64:.3f}, vs reduced: p = {pred:.3f}")
    assert p64 > ALPHA and pred > ALPHA


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize(
    "kw",
    [dict(teacher="erf"), dict(teacher="erf", pretraining="misaligned"),
     dict(teacher="relu", update="renormalized", teacher_direction="random"),
     dict(teacher="he3", student="erf", label="square", lr=0.02, switch_label="identity",
          switch_m=0.3)],
    ids=["erf", "misaligned", "relu-renormalized-random", "he3-square-two-stage"],
)
def test_torch_device_step_matches_host_step(kw, dtype, tol, monkeypatch):
    """The all-torch step (used on cuda) equals the numpy step given the same torch draws."""
    pytest.importorskip("torch")
    import loradyn.engines.dense as dense

    cfg = RunConfig(**{**dict(mu=0.4, d=40, batch=8, lr=0.2, steps=120, seeds=3,
                              record_every=7, backend="torch", device="cpu", dtype=dtype), **kw})
    host = simulate(cfg, engine="dense")
    monkeypatch.setattr(dense, "_TORCH_STEP_ON_CPU", True)
    dev = simulate(cfg, engine="dense")
    for name in ("u", "m") + (("p",) if cfg.pretraining == "misaligned" else ()):
        np.testing.assert_allclose(dev[name].values, host[name].values, rtol=0, atol=tol)
    np.testing.assert_array_equal(dev["escape_step"].values, host["escape_step"].values)
    assert 0 < np.abs(host["m"].values[..., -1]).min()  # the trajectories did move


def test_float32_refuses_steps_below_its_resolution():
    """A step of relative size < FLOAT32_MIN_STEP is refused in float32, run in float64."""
    from loradyn.engines.dense import FLOAT32_MIN_STEP, float32_step

    cfg = RunConfig(teacher="linear", mu=0.5, d=100, batch=20, steps=3, engine="dense",
                    dtype="float32")
    # linear, m = 0: E[g^2] = (1 - mu)^2 + u0^2, so rho = lr u0 sqrt((d - 1) E[g^2] / B)
    rho = cfg.lr * 0.1 * np.sqrt(99 * (0.25 + 0.01) / 20)
    assert float32_step(cfg) == pytest.approx(rho, rel=1e-9)
    tiny = cfg.replace(lr=0.5 * FLOAT32_MIN_STEP * cfg.lr / rho)
    with pytest.raises(LoradynError, match="float32 cannot resolve") as info:
        simulate(tiny)
    assert "\n" not in str(info.value) and "float64" in str(info.value)
    simulate(tiny.replace(dtype="float64"))  # float64 is never refused
    simulate(tiny.replace(lr=2.0 * tiny.lr))  # just above the limit: runs
    assert float32_step(cfg.replace(u0=0.0)) == np.inf  # nothing moves: nothing to resolve


def test_dtype_option_validation_and_key():
    cfg = RunConfig(engine="dense")
    assert cfg.dtype == "float64"
    f32 = cfg.replace(dtype="Float32")
    assert f32.dtype == "float32" and f32.key() != cfg.key()
    assert RunConfig.from_json(f32.to_json()) == f32
    with pytest.raises(LoradynError, match="dtype"):
        cfg.replace(dtype="float16")


@pytest.mark.gpu
def test_torch_backend_cuda_agrees_in_law():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = RunConfig(teacher="linear", mu=0.5, d=1000, batch=500, lr=0.2, steps=300, seeds=64,
                    record_every=100, backend="torch", device="cuda")
    dt = simulate(cfg, engine="dense")
    assert dt.attrs["backend"] == "torch:cuda"
    dr = simulate(cfg, engine="reduced")
    p = ks_2samp(_escapes(dt, cfg.steps), _escapes(dr, cfg.steps)).pvalue
    print(f"KS torch-cuda dense vs reduced: p = {p:.3f}")
    assert p > ALPHA


@pytest.mark.parametrize(
    "kw",
    [
        dict(update="renormalized"),
        dict(update="renormalized", pretraining="misaligned", mu=0.3),
        dict(teacher="relu", mu=0.3),
        dict(teacher="he3", student="erf", mu=0.6, lr=0.02, label="square"),
        dict(loss="correlation", teacher="tanh"),
    ],
    ids=["renormalized", "misaligned-renormalized", "relu", "he3-erf-square", "corr-tanh"],
)
def test_variants_dense_vs_reduced_small_d(kw):
    """Small d: u, m at the last step and escape steps agree in law (Bonferroni over 3)."""
    base = dict(d=60, batch=12, lr=0.1, steps=150, seeds=150, mu=0.5, teacher="erf",
                record_every=150)
    cfg = RunConfig(**{**base, **kw})
    a, b = simulate(cfg), simulate(cfg, engine="dense")
    pvals = [
        ks_2samp(a["m"].values[..., -1].ravel(), b["m"].values[..., -1].ravel()).pvalue,
        ks_2samp(a["u"].values[..., -1].ravel(), b["u"].values[..., -1].ravel()).pvalue,
        ks_2samp(_escapes(a, cfg.steps), _escapes(b, cfg.steps)).pvalue,
    ]
    assert min(pvals) > ALPHA / 3, pvals


@pytest.mark.slow
def test_ks_dense_vs_reduced_fig1_setting():
    """Paper scale (Fig. 1: d = 1000, batch 500, lr 0.2), erf at mu = 0.2, 40 seeds."""
    cfg = RunConfig(teacher="erf", mu=0.2, d=1000, batch=500, lr=0.2, steps=250, seeds=40,
                    record_every=250)
    p, med_r, med_d = _ks(cfg)
    print(f"KS erf Fig. 1 setting dense vs reduced: p = {p:.3f} (medians {med_r}, {med_d})")
    assert p > ALPHA


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("teacher, mu", [("linear", 0.5), ("erf", 0.2)])
def test_float32_fig1_setting(teacher, mu):
    """Paper scale (d = 1000, batch 500, lr 0.2), 64 seeds: torch float32 vs numpy float64
    and vs reduced (about 2 minutes per case on an idle core, 10+ on a loaded one)."""
    pytest.importorskip("torch")
    cfg = RunConfig(teacher=teacher, mu=mu, d=1000, batch=500, lr=0.2, steps=250, seeds=64,
                    record_every=250)
    red = _escapes(simulate(cfg, engine="reduced"), cfg.steps)
    f64 = _escapes(simulate(cfg, engine="dense"), cfg.steps)
    f32 = _escapes(simulate(cfg.replace(dtype="float32", backend="torch", device="cpu"),
                            engine="dense"), cfg.steps)
    p64, pred = ks_2samp(f32, f64).pvalue, ks_2samp(f32, red).pvalue
    print(f"KS {teacher} Fig. 1 float32 vs float64: p = {p64:.3f}, vs reduced: p = {pred:.3f} "
          f"(escaped {[(e <= cfg.steps).mean() for e in (f64, f32, red)]}, medians "
          f"{[float(np.median(e)) for e in (f64, f32, red)]})")
    assert min((e <= cfg.steps).mean() for e in (f64, f32, red)) > 0.8
    assert p64 > ALPHA and pred > ALPHA


def test_theory_columns_have_no_nan_when_the_start_reaches_the_threshold():
    """d = 4, threshold 0.5: r0 = 1/sqrt(d) = R, and tau = inf at mu = 1 (was inf * 0 = NaN)."""
    cfg = RunConfig(teacher="linear", mu=[0.5, 1.0], d=4, batch=10, lr=0.1, steps=5)
    ds = simulate(cfg)
    for v in ("tau_theory", "exit_time_theory", "exit_step_theory"):
        assert not np.any(np.isnan(ds[v].values)), v
    np.testing.assert_array_equal(ds["exit_step_theory"].values, [0.0, 0.0])


@pytest.mark.parametrize("engine", ["reduced", "dense", "ode"])
def test_switch_u_realigns_the_lora_scale_at_the_switch(engine):
    """App. B.4 re-alignment: at the switch u becomes switch_u * sign(w.w0) = 0.6 sign(m)
    (aligned model), so c = mu + u m rises above mu; without it u is kept."""
    import numpy as np

    from loradyn.config import RunConfig
    from loradyn.engines import simulate

    base = dict(teacher="he3", mu=(0.3,), d=200, lr=0.1 / 18, batch=100, steps=400, seeds=2,
                label="square", switch_label="identity", switch_m=0.12, record_every=1,
                engine=engine)
    ds = simulate(RunConfig(**base, switch_u=0.6))
    sw = ds.switch_step.values[0]
    assert np.all(sw > 0)
    for s, k in enumerate(sw):
        m, u = ds.m.values[0, s], ds.u.values[0, s]
        # the first recorded state after the switch has u = 0.6 sign(m) up to one step
        after = int(np.searchsorted(ds.step.values, k + 1))
        assert abs(u[after] - 0.6 * np.sign(m[after])) < 0.05
        assert ds.c.values[0, s, after] > 0.3
    plain = simulate(RunConfig(**base))
    s0 = int(plain.switch_step.values[0, 0])
    i = int(np.searchsorted(plain.step.values, s0 + 1))
    assert abs(plain.u.values[0, 0, i]) < 0.5


def test_switch_u_needs_a_schedule():
    from loradyn.config import RunConfig
    from loradyn.errors import LoradynError

    with pytest.raises(LoradynError, match="switch_u needs a two-stage schedule"):
        RunConfig(teacher="he3", mu=(0.3,), switch_u=0.6)
