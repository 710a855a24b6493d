"""The package's layers import downward only (DESIGN.md §2); one module builds the Flower apps."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedecg"
# Lower index = lower layer. A module may import its own layer or any lower one.
LAYERS = ["errors", "io", "config", "run_folder", "data", "models", "training", "federated",
          "privacy", "explain", "report", "study", "app", "deploy", "cli"]
SAME_RANK = {"explain": "report"}  # explain and report sit side by side


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fedecg" or len(parts) < 2:
        return None
    return parts[1]


def _rank(layer: str) -> int:
    return LAYERS.index(SAME_RANK.get(layer, layer))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_module_imports_only_its_own_or_lower_layers():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        own = _layer_of(".".join(relative.parts))
        if own is None or own == "__init__" or own == "__main__":
            continue
        own = own if own in LAYERS else None
        if own is None:
            continue
        for imported in _imports(path):
            target = _layer_of(imported)
            if target in LAYERS and _rank(target) > _rank(own):
                violations.append(f"{relative}: {own} imports {imported}")
    assert violations == []


def test_scripts_outside_the_package_do_not_import_the_cli():
    """``simulation/`` and ``benchmarks/`` use fedecg's modules, never its command line."""
    violations = [f"{path.relative_to(ROOT)}: imports {name}"
                  for folder in ("simulation", "benchmarks")
                  for path in (ROOT / folder).rglob("*.py")
                  for name in _imports(path) if _layer_of(name) == "cli"]
    assert violations == []


def _builds(path: Path, name: str) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == name for node in ast.walk(ast.parse(path.read_text())))


def test_exactly_one_module_builds_the_flower_apps():
    """``fedecg/app.py`` builds every ClientApp and ServerApp, and pyproject names it."""
    for app in ("ClientApp", "ServerApp"):
        builders = [path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")
                    if _builds(path, app)]
        assert builders == ["fedecg/app.py"], app
    components = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "components"]
    assert components == {"serverapp": "fedecg.app:server_app",
                          "clientapp": "fedecg.app:client_app"}
