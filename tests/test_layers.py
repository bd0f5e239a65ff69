"""The layers of ARCHITECTURE.md hold: folders are layers, and no module imports a layer above its own, in a
function body or not.

Bottom to top: ``sidenet_core/`` (errors, registry, FLOP formulas, layouts, staged models, atomic files, notices)
→ ``compressors/`` → ``sidenet/engine/`` (exit heads, policies, cascades, traces, selection, caching) →
``sidenet/tasks/`` with ``sidenet/data/`` and ``sidenet/models/`` (tasks, their data and model families, a task's
compressed MainNet) → ``sidenet/exits/`` (the registry and one module per system) → ``sidenet/bench/`` (settings,
cells, workers, timing, machine, store, results, rows) → ``sidenet/report/`` → entry points (``sidenet/cli/``: the
console script, the bench's pytest plugin and the test module it ships; ``bench/``). The layer of a module is read
from its folder: a new module needs no edit here, and a module put directly under ``sidenet/`` (no layer) fails.
Every ``import`` statement in every file is read from its syntax tree, so an import hidden inside a function counts
as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sidenet

ROOT = Path(__file__).resolve().parent.parent

# (module prefix, layer); the longest matching prefix wins
LAYERS: dict[str, int] = {
    "sidenet_core": 0,
    "compressors": 1,
    "sidenet": 2,  # the package's __init__: the public API re-exported from the engine
    "sidenet.engine": 2,
    "sidenet.tasks": 3,
    "sidenet.data": 3,
    "sidenet.models": 3,
    "sidenet.exits": 4,
    "sidenet.bench": 5,
    "sidenet.report": 6,
    "sidenet.cli": 7,  # a package: the console script, the bench's pytest plugin and the test module it ships
    "sidenet.cli.plugin": 7,
    "sidenet.cli.bench_suite": 7,
    "bench": 7,
}
_PUBLIC = {*sidenet.__all__, "__version__"}


def layer_of(module: str) -> int | None:
    """The layer of ``module`` by its folder; None for third-party modules and for a module under ``sidenet/``
    outside every layer folder."""
    parts = module.split(".")
    if parts[0] not in ("sidenet_core", "compressors", "sidenet", "bench"):
        return None
    if (
        parts[0] == "sidenet"
        and len(parts) == 2
        and parts[1] not in ("engine", "tasks", "data", "models", "exits", "bench", "report", "cli")
    ):
        # ``from sidenet import X`` of a public name (a class, not a module) is the package's own layer
        return LAYERS["sidenet"] if parts[1][:1].isupper() or parts[1] in _PUBLIC else None
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS and (prefix != "sidenet" or n == len(parts)):
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement, at any depth; ``from x import y`` also yields ``x.y``
    (``from sidenet import pipeline`` imports the pipeline)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if layer_of(base) is not None]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def sources() -> list[Path]:
    files = [*ROOT.glob("sidenet_core/**/*.py"), *ROOT.glob("compressors/**/*.py"), *ROOT.glob("sidenet/**/*.py")]
    return sorted([*files, *ROOT.glob("bench/**/*.py")])


def test_every_package_is_assigned_a_layer() -> None:
    assert sources(), "no sources found"
    for path in sources():
        assert layer_of(module_name(path)) is not None, path


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_reaches_a_higher_layer(path: Path) -> None:
    own = layer_of(module_name(path))
    assert own is not None
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name} (layer {layer_of(name)} > {own})"
        for line, name in imports_of(path)
        if (layer_of(name) or 0) > own
    ]
    assert not upward, "\n".join(upward)


def test_the_walk_sees_imports_inside_function_bodies(tmp_path: Path) -> None:
    """The check itself can fail: an upward import hidden in a function is found."""
    fake = ROOT / "compressors" / "_layer_probe_tmp.py"
    fake.write_text("def f():\n    from sidenet.bench.pipeline import prepare\n    return prepare\n", encoding="utf-8")
    try:
        names = [name for _, name in imports_of(fake)]
    finally:
        fake.unlink()
    assert "sidenet.bench.pipeline" in names
    assert layer_of("sidenet.bench.pipeline") == 5 > layer_of("compressors._layer_probe_tmp") == 1


def test_layers_are_ordered_inside_the_library_too() -> None:
    """The library is not one layer: the engine may not reach a task, a task not an exit system, an exit system not
    the bench, the bench not the report; a module outside every layer folder is refused."""
    chain = [
        "sidenet_core.errors",
        "compressors.base",
        "sidenet.engine.cascade",
        "sidenet.tasks.base",
        "sidenet.exits.eenet",
        "sidenet.bench.harness",
        "sidenet.report.render",
        "sidenet.cli",
    ]
    layers = [layer_of(m) for m in chain]
    assert layers == sorted(layers) and len(set(layers)) == len(layers), dict(zip(chain, layers, strict=True))
    assert layer_of("sidenet.data.mnist") == layer_of("sidenet.tasks.base")
    assert layer_of("sidenet.loose_module") is None
    assert layer_of("sidenet.SideNet") == layer_of("sidenet.engine.sidenet")
    assert layer_of("torch.nn") is None


def test_compressors_import_only_the_core_of_sidenet() -> None:
    for path in ROOT.glob("compressors/**/*.py"):
        bad = [n for _, n in imports_of(path) if n.split(".")[0] == "sidenet"]
        assert not bad, f"{path.name} imports {bad}"
