"""The layers of ARCHITECTURE.md hold: no module imports a layer above its own, in a function body or not.

Bottom to top: ``sidenet_core`` (errors, registry, FLOP formulas, model layouts, staged models) → ``compressors``
→ the sidenet library (tasks, data, exit heads, policies, cascades, traces, caching) → measuring (pipeline,
harness, results, store) → entry points (CLI, report, ``bench/``). Every ``import`` statement in every file is
read from its syntax tree, so an import hidden inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MEASURING = {
    "sidenet.pipeline",
    "sidenet.harness",
    "sidenet.results",
    "sidenet.store",
    "sidenet.row_record",
    "sidenet.bench_options",
    "sidenet.timing",
    "sidenet.cell_costs",
    "sidenet.cells",
    "sidenet.workers",
    "sidenet.timing_checks",
    "sidenet.worker_imports",
}
ENTRY = {"sidenet.cli", "sidenet.report", "bench"}


def layer_of(module: str) -> int | None:
    """0 core, 1 compressors, 2 library, 3 measuring, 4 entry points; None for third-party modules."""
    top = module.split(".")[0]
    if top == "sidenet_core":
        return 0
    if top == "compressors":
        return 1
    if top == "bench":
        return 4
    if top != "sidenet":
        return None
    parts = module.split(".")
    prefix = ".".join(parts[:2])
    if prefix in ENTRY:
        return 4
    if prefix in MEASURING:
        return 3
    return 2


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
    fake.write_text("def f():\n    from sidenet.pipeline import prepare\n    return prepare\n", encoding="utf-8")
    try:
        names = [name for _, name in imports_of(fake)]
    finally:
        fake.unlink()
    assert "sidenet.pipeline" in names
    assert layer_of("sidenet.pipeline") == 3 > layer_of("compressors._layer_probe_tmp") == 1


def test_compressors_import_only_the_core_of_sidenet() -> None:
    for path in ROOT.glob("compressors/**/*.py"):
        bad = [n for _, n in imports_of(path) if n.split(".")[0] == "sidenet"]
        assert not bad, f"{path.name} imports {bad}"
