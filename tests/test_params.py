"""The config protocol (loradyn.params): one declaration per field, everything derived."""

from __future__ import annotations

import typer.main

import loradyn.cli  # noqa: F401 - registers the commands
from loradyn import params
from loradyn.cli._app import app
from loradyn.config import RunConfig
from loradyn.engines import simulate
from loradyn.errors import LoradynError
from loradyn.sweep.simulate import check_value, parameter_names

# a valid, non-default sweep value for every field (the sweep check must accept it)
SAMPLE = {
    "teacher": "erf", "student": "relu", "label": "square", "loss": "correlation",
    "mu": [0.1, 0.2], "d": 50, "lr": 0.1, "batch": 10, "steps": 20, "seeds": 2, "seed0": 3,
    "u0": 0.1, "m0": 0.1, "p0": 0.1, "update": "renormalized", "pretraining": "misaligned",
    "record_every": 2, "threshold": 0.4, "switch_label": "identity", "switch_step": 5,
    "switch_m": 0.3, "switch_u": 0.5, "nodes": 20, "engine": "dense", "backend": "torch",
    "device": "cpu", "teacher_direction": "random", "sampler": "samples", "dtype": "float32",
}


def _options(command: str) -> set[str]:
    cmd = typer.main.get_command(app).commands[command]
    return {name for p in cmd.params for name in p.opts + p.secondary_opts}


def test_every_runconfig_field_is_declared_and_has_a_cli_option():
    fields = [f.name for f, _ in params.declared(RunConfig)]
    import dataclasses

    assert fields == [f.name for f in dataclasses.fields(RunConfig) if f.init]
    opts = _options("simulate")
    for name in fields:
        assert "--" + name.replace("_", "-") in opts, name


def test_simulate_help_lists_every_field(capsys):
    from loradyn.cli import main

    try:
        main(["simulate", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for f, _ in params.declared(RunConfig):
        assert "--" + f.name.replace("_", "-") in out


def test_every_runconfig_field_has_a_sweep_check():
    names = set(parameter_names())
    for f, _ in params.declared(RunConfig):
        if f.name == "engine":  # set once in [sweep]; checked there
            continue
        assert f.name in names
        assert check_value(f.name, SAMPLE[f.name]) is not None
    assert set(SAMPLE) == {f.name for f, _ in params.declared(RunConfig)}


def test_sweep_check_rejects_wrong_types_from_the_declaration():
    for key, bad in [("d", "abc"), ("lr", "0.2"), ("mu", "x"), ("teacher", 3), ("nodes", 1.5)]:
        try:
            check_value(key, bad)
        except LoradynError:
            continue
        raise AssertionError(f"{key}={bad!r} accepted")


def test_hash_leaves_out_options_that_change_nothing_and_resolves_the_rest():
    base = RunConfig(teacher="linear", d=30, batch=5, steps=5)
    # reduced engine: backend, device and teacher direction cannot change the numbers
    assert base.key() == base.replace(backend="torch", teacher_direction="random").key()
    # sampler auto resolves to gram for a linear model: same numbers as sampler='gram'
    assert base.key() == base.replace(sampler="gram").key()
    assert base.key() != base.replace(sampler="samples").key()
    # dense numpy: the device is irrelevant; dense torch: device None resolves
    dense = base.replace(engine="dense")
    assert dense.key() != base.key()
    assert dense.key() == dense.replace(device="cuda").key()
    assert dense.key() != dense.replace(teacher_direction="random").key()
    # dtype changes the dense engine's numbers only
    assert dense.key() != dense.replace(dtype="float32").key()
    assert base.key() == base.replace(dtype="float32").key()
    # physics always counts
    assert base.key() != base.replace(lr=0.3).key()


def test_device_none_is_resolved_before_hashing():
    cfg = RunConfig(engine="dense", backend="torch", d=10, batch=2, steps=2)
    resolved = cfg.hash_dict()["device"]
    assert resolved in ("cpu", "cuda")
    assert cfg.key() == cfg.replace(device=resolved).key()
    assert "device" not in RunConfig(d=10).hash_dict()


def test_physics_and_options_split_and_json_round_trip():
    cfg = RunConfig(**{k: v for k, v in SAMPLE.items() if k not in ("switch_step",)})
    assert set(cfg.options()) == {"engine", "backend", "device", "teacher_direction", "sampler",
                                  "dtype"}
    assert not set(cfg.options()) & set(cfg.physics())
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_simulate_takes_execution_options_but_not_physics():
    cfg = RunConfig(teacher="linear", d=20, batch=4, steps=4, record_every=2)
    ds = simulate(cfg, engine="reduced", sampler="samples")
    assert RunConfig.from_json(ds.attrs["config"]).sampler == "samples"
    try:
        simulate(cfg, lr=0.5)
    except LoradynError as exc:
        assert "not an execution option" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a physics field was accepted as an option")


def test_from_dict_of_a_non_mapping_is_one_line():
    try:
        RunConfig.from_dict(None)  # type: ignore[arg-type]
    except LoradynError as exc:
        assert "mapping" in str(exc)
    else:  # pragma: no cover
        raise AssertionError


# a valid, non-default sweep value for every TwoLayerConfig field
TL_SAMPLE = {
    "mu": [0.4, 0.6], "rank": 2, "activation": "erf", "teacher": "relu", "norm": "1/K",
    "d": 50, "lr": 0.05, "batch": 10, "steps": 20, "seeds": 2, "seed0": 3, "a0": 0.1,
    "m0": 0.1, "update": "renormalized", "threshold": 0.4, "record_every": 2,
    "label": "square", "from_scratch": True, "ranks": [1, 2], "engine": "ode",
    "noise_term": False, "stop_on_escape": True,
}


def _twolayer_options(command: str) -> set[str]:
    group = typer.main.get_command(app).commands["twolayer"]
    cmd = group.commands[command]
    return {name for p in cmd.params for name in p.opts + p.secondary_opts}


def test_every_twolayer_field_is_declared_and_has_a_cli_option():
    import dataclasses

    from loradyn.twolayer import TwoLayerConfig

    fields = [f.name for f, _ in params.declared(TwoLayerConfig)]
    assert fields == [f.name for f in dataclasses.fields(TwoLayerConfig) if f.init]
    assert set(TL_SAMPLE) == set(fields)
    opts = _twolayer_options("simulate")
    for name in fields:
        assert "--" + name.replace("_", "-") in opts, name


def test_every_twolayer_field_has_a_sweep_check():
    from loradyn.sweep.twolayer import check_value as tl_check
    from loradyn.sweep.twolayer import parameter_names as tl_names
    from loradyn.twolayer import TwoLayerConfig

    names = set(tl_names())
    for f, _ in params.declared(TwoLayerConfig):
        if f.name == "engine":  # set once in [sweep]
            continue
        assert f.name in names, f.name
        assert tl_check(f.name, TL_SAMPLE[f.name]) is not None, f.name
    assert tl_check("rank", 2) == 2 and tl_check("lr", 0.1) == 0.1
    assert tl_check("mu", [0.5, 0.6]) == [0.5, 0.6]
    assert tl_check("norm", "1/k") == "1/K"  # normalized by the declared check
    for key, bad in [("rank", 0), ("lr", "x"), ("mu", "a"), ("nope", 1), ("d", 2.5),
                     ("noise_term", 1), ("update", "sgd"), ("engine", "ode")]:
        try:
            tl_check(key, bad)
        except LoradynError:
            continue
        raise AssertionError(f"{key}={bad!r} accepted")


def test_twolayer_physics_options_and_hash():
    from loradyn.twolayer import TwoLayerConfig

    cfg = TwoLayerConfig(mu=[0.5, 0.6], d=40, batch=5, steps=4)
    assert set(cfg.options()) == {"engine", "noise_term", "stop_on_escape"}
    assert not set(cfg.options()) & set(cfg.physics())
    # the ODE's noise term changes nothing for the stochastic engines
    assert cfg.key() == cfg.replace(noise_term=False).key()
    ode = cfg.replace(engine="ode")
    assert ode.key() != cfg.key() and ode.key() != ode.replace(noise_term=False).key()
    assert cfg.key() != cfg.replace(stop_on_escape=True).key()
    assert cfg.key() != cfg.replace(lr=0.2).key()
    assert TwoLayerConfig.from_json(cfg.to_json()) == cfg


def test_twolayer_result_round_trips_from_its_attrs():
    from loradyn.twolayer import TwoLayerConfig
    from loradyn.twolayer import simulate as tl_simulate

    cfg = TwoLayerConfig(mu=[0.5, 0.6], rank=1, ranks=[1, 2], d=40, batch=5, steps=4,
                         record_every=2, seeds=2)
    ds = tl_simulate(cfg)
    assert TwoLayerConfig.from_json(ds.attrs["config"]) == cfg
    assert ds["diverged"].dtype == bool
    # the old calling convention (ranks and engine outside the config) is kept
    ds2 = tl_simulate(cfg.replace(ranks=None), [1, 2], "reduced")
    assert TwoLayerConfig.from_json(ds2.attrs["config"]) == cfg
