"""The dependency tiers hold: imports point down the layers, no cycle, and the cheap layers
stay cheap (no torch for cost and space, no Ray, Optuna or MLflow for training)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pdsweep"
# Lowest first; a module may import its own layer and those below it, never above.
LAYERS = ("top", "cost", "space", "training", "results", "sweep", "cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _layer(module: str) -> str:
    if module == "pdsweep.__main__":  # ``python -m pdsweep`` is the command line
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """The pdsweep modules ``path`` imports (``TYPE_CHECKING`` blocks aside)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.ClassDef):
                inside = top  # a class body runs at import
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("pdsweep"):
                if inside or not module_level_only:
                    names = [f"{child.module}.{alias.name}" for alias in child.names]
                    found.update(name if name in MODULES else child.module for name in names)
            elif isinstance(child, ast.Import):
                if inside or not module_level_only:
                    found.update(alias.name for alias in child.names if alias.name.startswith("pdsweep"))
            visit(child, inside)

    visit(tree, True)
    return found


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    own = LAYERS.index(_layer(module))
    upward = [target for target in _imports(MODULES[module], module_level_only=False)
              if LAYERS.index(_layer(target)) > own]
    assert not upward, f"{module} ({_layer(module)}) imports from a higher layer: {upward}"


def test_no_import_cycle_at_import_time() -> None:
    graph = {module: _imports(path, module_level_only=True) & set(MODULES) - {module} for module, path in MODULES.items()}
    # A package's __init__ is imported before its submodules: that edge is not a cycle.
    state: dict[str, str] = {}

    def walk(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if module.startswith(target + "."):
                continue
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, target]))
            if target not in state:
                walk(target, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [])


def _loaded_after(code: str) -> set[str]:
    """The heavy packages a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    return set(out) & {"torch", "timm", "ray", "optuna", "mlflow", "fvcore", "pyarrow", "matplotlib"}


@pytest.mark.parametrize(
    ("code", "allowed"),
    [
        ("import pdsweep, pdsweep.cost, pdsweep.space, pdsweep.config", set()),
        ("from pdsweep.space import load_space, plan; from pdsweep.cost import Budget; "
         "plan(load_space('paper'), Budget(17.6))", set()),
        ("from pdsweep.cli import main; main(['plan', '--budget-gflops', '4.6', '--json'])", set()),
        ("import pdsweep.training, pdsweep.training.loop, pdsweep.training.verify, pdsweep.training.data",
         {"torch", "timm", "fvcore", "matplotlib"}),  # matplotlib: fvcore's own import
        ("import pdsweep.results.report, pdsweep.results.rows, pdsweep.results.tracking, pdsweep.results.summary",
         {"pyarrow"}),
        ("import pdsweep.sweep, pdsweep.sweep.settings, pdsweep.sweep.spec", {"pyarrow"}),
    ],
)
def test_cheap_layers_load_no_heavy_package(code: str, allowed: set[str]) -> None:
    assert _loaded_after(code) <= allowed
