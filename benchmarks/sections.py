"""Report sections that a benchmark writes itself into a file another script rewrites
(run_all.py keeps BENCHMARKS.md's, quality/run.py RESULTS.md's)."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, name: str, section: list[str]) -> None:
    """Put ``section`` (its lines, starting with ``## name``) in place of the file's
    ``## name`` section, or at its end."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {name}"), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    path.write_text("\n".join(lines[:start] + section + lines[end:]) + "\n", encoding="utf-8")


def kept_sections(path: Path, names: tuple[str, ...]) -> list[str]:
    """The lines of ``path``'s sections named in ``names``, each up to the next ``## ``
    heading (and a blank line after them), for a rewrite of the file to keep."""
    if not path.is_file():
        return []
    kept, keeping = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keeping = line[3:].strip() in names
        if keeping:
            kept.append(line)
    return kept + ([""] if kept else [])
