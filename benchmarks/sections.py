"""BENCHMARKS.md sections that a benchmark writes itself (run_all.py keeps them)."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, name: str, section: list[str]) -> None:
    """Put ``section`` (its lines, starting with ``## name``) in place of the file's
    ``## name`` section, or at its end."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {name}"), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    path.write_text("\n".join(lines[:start] + section + lines[end:]) + "\n", encoding="utf-8")
