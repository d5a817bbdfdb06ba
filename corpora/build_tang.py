#!/usr/bin/env python3
"""Rebuild ``tang_poems.txt``: regular-verse Tang poems from the npm package chinese-poetry.

Source: the ``dist/quantangshi/poet.tang.*.json`` files (全唐詩, traditional
characters) of the npm package ``chinese-poetry@2.0.1``.  Only regular verse
is kept:

* jueju (絕句, quatrains): 4 lines of 5 or of 7 characters;
* lüshi (律詩, regulated verse): 8 lines of 5 or of 7 characters.

A poem's lines are obtained by splitting its paragraphs at the Chinese
punctuation ，。？！；  (a run of such marks counts as one break, and
paragraphs holding nothing but such marks are ignored).  Every character of
every line must be a CJK ideograph, so poems with lacunae (□), brackets,
editorial notes, Latin letters, digits or any other mark are rejected.
Exact duplicate poems (same output text) are written once, at their first
occurrence.

Output: one poem per line, UTF-8, lines joined with "，" after odd lines and
"。" after even lines, e.g. ``秦川雄帝宅，函谷壯皇居。綺殿千尋起，離宮百雉餘。…``.
Files are processed in numeric order (poet.tang.0, 1000, 2000, …) and poems
in file order, so the output is deterministic.

Usage::

    python3 corpora/build_tang.py                 # fetch with `npm pack`
    python3 corpora/build_tang.py /path/to/package  # an unpacked package
    python3 corpora/build_tang.py -o out.txt ...

Standard library only; the package fetching and the ideograph test live in
``chinese_poetry.py`` beside this script, shared with ``build_ci.py``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

from chinese_poetry import arguments, check_version, fetch_package, is_ideograph

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "tang_poems.txt"

# Punctuation that ends a verse line in the source; a run counts as one break.
LINE_BREAK = re.compile(r"[，。？！；]+")

# (characters per line, number of lines) -> form name.
FORMS: dict[tuple[int, int], str] = {
    (5, 4): "wujue",  # 五言絕句
    (7, 4): "qijue",  # 七言絕句
    (5, 8): "wulu",  # 五言律詩
    (7, 8): "qilu",  # 七言律詩
}


def tang_files(package_root: Path) -> list[Path]:
    """Return the poet.tang.N.json files sorted by N."""
    directory = package_root / "dist" / "quantangshi"
    files = sorted(
        directory.glob("poet.tang.*.json"), key=lambda path: int(path.name.split(".")[2])
    )
    if not files:
        raise SystemExit(f"no poet.tang.*.json files in {directory}")
    return files


def verse_lines(paragraphs: list[str]) -> list[str]:
    """Split a poem's paragraphs into verse lines at the line-ending punctuation."""
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend(part for part in LINE_BREAK.split(paragraph) if part)
    return lines


def classify(lines: list[str]) -> str | None:
    """Return the form name if ``lines`` is a regular jueju or lüshi, else None."""
    lengths = {len(line) for line in lines}
    if len(lengths) != 1:
        return None
    return FORMS.get((lengths.pop(), len(lines)))


def format_poem(lines: list[str]) -> str:
    """Join lines with "，" after odd lines and "。" after even lines."""
    return "".join(line + ("，" if index % 2 == 0 else "。") for index, line in enumerate(lines))


def build(package_root: Path, output: Path) -> None:
    """Filter the Tang poems under ``package_root`` and write them to ``output``."""
    check_version(package_root)
    counts: Counter[str] = Counter()
    kept_forms: Counter[str] = Counter()
    seen: set[str] = set()
    poems: list[str] = []

    for path in tang_files(package_root):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            counts["read"] += 1
            lines = verse_lines(entry.get("paragraphs") or [])
            form = classify(lines)
            if form is None:
                counts["rejected: not 4 or 8 lines of 5 or 7"] += 1
                continue
            if not all(is_ideograph(char) for line in lines for char in line):
                counts["rejected: non-ideograph character"] += 1
                continue
            poem = format_poem(lines)
            if poem in seen:
                counts["rejected: exact duplicate"] += 1
                continue
            seen.add(poem)
            poems.append(poem)
            kept_forms[form] += 1

    text = "".join(poem + "\n" for poem in poems)
    output.write_text(text, encoding="utf-8", newline="\n")

    ideographs = Counter(char for poem in poems for char in poem if is_ideograph(char))
    size = output.stat().st_size
    report: list[tuple[str, object]] = [("poems read", counts["read"])]
    rejections = sorted(reason for reason in counts if reason.startswith("rejected"))
    report += [(reason, counts[reason]) for reason in rejections]
    report += [(f"kept {form}", kept_forms[form]) for form in FORMS.values()]
    report += [
        ("poems kept (= lines)", len(poems)),
        ("ideographs", sum(ideographs.values())),
        ("characters incl. punctuation", len(text) - len(poems)),
        ("distinct ideographs", len(ideographs)),
        ("file size (bytes)", f"{size} ({size / 1e6:.2f} MB)"),
    ]
    for label, value in report:
        print(f"{label:<40} {value}")
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, obtain the package (local or via npm) and build the corpus."""
    parser = arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT, "output file")
    args = parser.parse_args(argv)

    if args.package is not None:
        build(args.package, args.output)
        return
    with tempfile.TemporaryDirectory(prefix="tang-") as tmp:
        build(fetch_package(Path(tmp)), args.output)


if __name__ == "__main__":
    main()
