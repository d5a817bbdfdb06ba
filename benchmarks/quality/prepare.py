"""Build the quality benchmark's corpus: the whole King James Bible, PTB style.

Source: Debian's bible-kjv-text 4.38 (via corpora/build_kjv.sh --full, which fetches the
packages with apt-get download). Processing, as Mikolov's Penn Treebank release:

- lowercased; punctuation split off as tokens (`,` `.` `:` `;` `?` `!` `(` `)`), the
  possessive `'s` and a bare `'` split from their word, hyphenated words kept whole;
- one verse per line;
- split by contiguous blocks, never by shuffled lines: the verses are cut into 100 blocks
  in canonical order; in every run of 20 blocks the 19th is validation and the 20th test
  (5% each, spread over the whole Bible), the rest training;
- vocabulary: the 9,999 most frequent training words plus `<unk>`, which replaces every
  other word in all three files (10,000 types, as PTB).

Writes train.txt, valid.txt and test.txt (and stats.json) into the output folder.

    python benchmarks/quality/prepare.py --out benchmarks/.cache/quality
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|'s\b|'|[^\sa-z0-9]")
BLOCKS = 100
VOCAB = 10_000


def tokenize(line: str) -> list[str]:
    return TOKEN.findall(line.lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / ".cache" / "quality")
    parser.add_argument("--source", type=Path, default=None,
                        help="the whole KJV, one verse per line (default: build it)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.source or args.out / "kjv_full.txt"
    if not source.exists():
        subprocess.run(["bash", str(REPO / "corpora" / "build_kjv.sh"), "-o", str(args.out / "kjv_poetry.txt"),
                        "--full", str(source)], check=True)
    verses = [tokenize(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for index, verse in enumerate(verses):
        block = index * BLOCKS // len(verses)
        name = "valid" if block % 20 == 18 else "test" if block % 20 == 19 else "train"
        splits[name].append(verse)
    counts = Counter(word for verse in splits["train"] for word in verse)
    vocab = {word for word, _ in counts.most_common(VOCAB - 1)}
    stats: dict[str, object] = {"source": str(source), "vocabulary": len(vocab) + 1}
    for name, lines in splits.items():
        text = [" ".join(w if w in vocab else "<unk>" for w in verse) for verse in lines]
        (args.out / f"{name}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
        words = sum(len(v) for v in lines)
        unk = sum(1 for v in lines for w in v if w not in vocab)
        stats[name] = {"lines": len(lines), "words": words, "unk": unk,
                       "chars": sum(len(t) + 1 for t in text)}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
