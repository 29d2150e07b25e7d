"""Layering: no import cycles in src/, the ViT table without torch, no lost manifest update."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _graph() -> dict[str, set[str]]:
    """Module -> loradyn modules it imports, at any depth (function-level imports too),
    leaving out ``if TYPE_CHECKING:`` blocks and a module's own parent packages (importing
    a submodule always imports them)."""
    root = SRC / "loradyn"
    mods: dict[str, tuple[Path, bool]] = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)

    def targets(mod: str, is_pkg: bool, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        assert isinstance(node, ast.ImportFrom)
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                for a in node.names]

    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        parents = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
        deps: set[str] = set()
        todo = list(ast.parse(path.read_text()).body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                todo.extend(node.orelse)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(t for t in targets(mod, is_pkg, node)
                            if t in mods and t != mod and t not in parents)
            todo.extend(ast.iter_child_nodes(node))
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_in_src():
    graph = _graph()
    assert "loradyn.sweep.runner" in graph and "loradyn.store" in graph["loradyn.sweep.runner"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_imports() -> list[str]:
    """``from X import _name`` across modules of src/loradyn (a private helper used by
    another module). A private *module* (``_common``, ``_layout``) may be imported by the
    modules of its own package; aliasing a public name (``import f as _f``) is fine."""
    out = []
    for p in sorted((SRC / "loradyn").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            inside = node.level == 1  # a sibling in the same package
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    if inside and node.module is None:  # from . import _common
                        continue
                    out.append(f"{p.relative_to(SRC)}:{node.lineno}: {a.name}")
            mod = node.module or ""
            if any(part.startswith("_") and not part.startswith("__")
                   for part in mod.split(".")) and not inside:
                out.append(f"{p.relative_to(SRC)}:{node.lineno}: {mod}")
    return out


def test_no_private_helper_is_imported_across_modules():
    assert _private_imports() == []


def test_torch_free_modules_do_not_import_torch():
    graph = _graph()
    torch_part = {"loradyn.vit.train", "loradyn.vit.model", "loradyn.vit.data"}
    for mod in ("loradyn.vit.table", "loradyn.vit.figures", "loradyn.vit.rundir",
                "loradyn.vit.config"):
        assert not graph[mod] & torch_part, mod


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test", name=name)
sys.meta_path.insert(0, Block())
from loradyn.cli import main
main(sys.argv[1:])
"""


def test_vit_table_runs_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from loradyn.vit import train as T
    from loradyn.vit.presets import get_preset

    torch.set_num_threads(1)
    cfg = get_preset("digits-shifted", "smoke")
    cfg = replace(cfg, seeds=(0,), pretrain=replace(cfg.pretrain, epochs=1, checkpoints=(1,)),
                  finetune=replace(cfg.finetune, epochs=1), report_epochs=(1,))
    res = T.run_experiment(cfg, tmp_path / "run", device="cpu")
    want = res.table.read_text()
    res.table.unlink()
    (tmp_path / "run" / "figure.png").unlink()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "vit", "table", "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "table.csv").read_text() == want
    assert (tmp_path / "run" / "figure.png").stat().st_size > 1000
    # the table reads the run's result store (torch-free): a fine-tune result made by
    # other number-computing code is refused, and used with --reuse-other-code
    from loradyn.io import load_netcdf, save_netcdf

    (result,) = (tmp_path / "run" / "results").glob("*.nc")
    ds = load_netcdf(result)
    ds.attrs["code_hash"] = "0" * 16
    save_netcdf(ds, result)
    table = [sys.executable, "-c", BLOCK_TORCH, "vit", "table", "--no-figure", "--out",
             str(tmp_path / "run")]
    r = subprocess.run(table, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--reuse-other-code" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(table + ["--reuse-other-code"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "table.csv").read_text() == want
    # the block works: the training commands do need torch
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "vit", "run", "--preset",
                        "digits-shifted", "--out", str(tmp_path / "x")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "torch" in r.stderr


def test_concurrent_seed_updates_of_config_json_lose_none(tmp_path):
    from loradyn.vit.presets import get_preset
    from loradyn.vit.rundir import load_run_config, prepare_run_dir

    cfg = get_preset("digits-shifted", "smoke")
    out = tmp_path / "run"
    prepare_run_dir(cfg.with_seeds((0,)), out)
    errors: list[BaseException] = []

    def add(seed: int) -> None:
        try:
            for _ in range(5):
                prepare_run_dir(cfg.with_seeds((seed,)), out)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(s,)) for s in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert load_run_config(out).seeds == tuple(range(9))
