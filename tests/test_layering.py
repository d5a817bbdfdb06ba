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
