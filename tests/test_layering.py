"""The library stays free of the CLI: only the cli package, ui.py and __main__.py may use
typer/rich, and no library module (subpackages included) imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import lmcli

CLI_LAYER = {"ui.py", "__main__.py"}
FORBIDDEN = {"typer", "rich", "click"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names} | {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots |= {node.module.split(".")[0], node.module}
            if node.module == "lmcli":
                roots |= {f"lmcli.{alias.name}" for alias in node.names}
    return roots


def test_library_modules_do_not_import_the_cli_layer() -> None:
    package = Path(lmcli.__file__).parent
    checked = 0
    for path in sorted(package.rglob("*.py")):
        if path.name in CLI_LAYER and path.parent == package or "cli" in path.relative_to(package).parts[:-1]:
            continue
        roots = imported_roots(path)
        assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
        assert not any(root == "lmcli.ui" or root.startswith("lmcli.cli") for root in roots), \
            f"{path.name} imports the CLI layer"
        checked += 1
    assert checked >= 20  # the package's modules and the train subpackage's


def declared_distributions() -> set[str]:
    """The distributions pyproject.toml names: dependencies and every extra."""
    import re
    import tomllib

    project = tomllib.loads((Path(lmcli.__file__).parent.parent / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def required_roots(path: Path) -> set[str]:
    """Top-level modules a file imports, but for those it tries inside ``try: ...
    except ImportError`` (optional: the code has a way without them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {id(inner) for part in node.body for inner in ast.walk(part)}
    roots = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_every_package_the_library_imports_is_declared() -> None:
    """A fresh `pip install -e .` must bring what lmcli imports: a module that only came
    along as another package's dependency (click once came with jiwer) breaks there."""
    import importlib.metadata
    import sys

    package = Path(lmcli.__file__).parent
    owners = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = {}
    for path in sorted(package.rglob("*.py")):
        for root in required_roots(path):
            if root in sys.stdlib_module_names or root in ("lmcli", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in owners.get(root, [root])}
            if not dists & declared:
                missing.setdefault(root, []).append(path.name)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
