"""The library stays free of the CLI: only cli.py, ui.py and __main__.py may use typer/rich."""

from __future__ import annotations

import ast
from pathlib import Path

import lmcli

CLI_LAYER = {"cli.py", "ui.py", "__main__.py"}
FORBIDDEN = {"typer", "rich", "click"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            if node.module == "lmcli":
                roots |= {f"lmcli.{alias.name}" for alias in node.names}
    return roots


def test_library_modules_do_not_import_the_cli_layer() -> None:
    package = Path(lmcli.__file__).parent
    checked = 0
    for path in sorted(package.glob("*.py")):
        if path.name in CLI_LAYER:
            continue
        roots = imported_roots(path)
        assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
        assert not roots & {"lmcli.cli", "lmcli.ui"}, f"{path.name} imports the CLI layer"
        checked += 1
    assert checked >= 8
