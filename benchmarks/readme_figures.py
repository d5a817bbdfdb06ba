"""README's figures, generated from the reports, so that the two cannot disagree.

The block between README's ``<!-- figures -->`` and ``<!-- /figures -->`` lines is written
from benchmarks/RESULTS.md (its headline tables) and benchmarks/BENCHMARKS.md (its summary
table); run_all.py and quality/run.py call this after writing their report, and a test
fails when README's block is not what this script would write.

    python benchmarks/readme_figures.py           # rewrite README's block
    python benchmarks/readme_figures.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
BENCHMARKS = REPO / "benchmarks" / "BENCHMARKS.md"
BEGIN, END = "<!-- figures -->", "<!-- /figures -->"
# Rows of the speed summary the README shows (by the start of their benchmark cell).
SPEED_ROWS = ("training", "scoring", "generation", "sampling", "N-best", "`lmcli score`", "`lmcli rerank`")


def section(text: str, heading_start: str) -> list[str]:
    """The lines of the first ``## `` section whose heading starts with ``heading_start``."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].startswith(heading_start)
        elif inside:
            lines.append(line)
    return lines


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of every table row in ``lines`` (header and rule left out)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in lines if line.startswith("|")]
    return [row for row in rows if row and not set(row[0]) <= {"-"} and row[0] != "model"
            and row[0] != "benchmark"]


def quality_lines(results: str) -> list[str]:
    headline = section(results, "Headline")
    if not headline:
        return ["Quality: no headline over seeds in [RESULTS.md](benchmarks/RESULTS.md) yet."]
    rows = {row[0].split(" ", 1)[0]: row for row in table_rows(headline)}
    out = ["Quality ([RESULTS.md](benchmarks/RESULTS.md), the King James Bible, "
           "PTB style, 15 minutes of training on one core, mean ± half range over seeds "
           f"{seed_list(results)}, recipes chosen on validation, test read once per run):", ""]
    word, kn5, base = rows.get("lmcli-word"), rows.get("kn5"), rows.get("baseline-word")
    if word:
        out.append(f"- word level, `lmcli train --level word --min-freq 1`: sentence-level test "
                   f"perplexity {word[3]}" + (f" against {kn5[3]} for a Kneser-Ney 5-gram, "
                                                f"{below(word[5])}" if kn5 else "")
                   + f"; stream {word[4]}" + (f" against {base[4]} for PyTorch's word_language_model "
                                              f"LSTM at the same precision, {below(word[6])}" if base else "")
                   + ".")
    char, plain = rows.get("lmcli-char"), rows.get("plain-char")
    if char:
        out.append(f"- character level, `--level char`: {char[4]} bits per character (stream)"
                   + (f" against {plain[4]} for the same plain LSTM on characters, {below(char[5])}"
                      if plain else "") + ".")
    return out


def below(cell: str) -> str:
    """``23.6% ± 0.4% (target 25%: 0 of 3 seeds)`` -> ``23.6% ± 0.4% below (target ...)``."""
    figure, _, rest = cell.partition(" (")
    return f"{figure} below" + (f" ({rest}" if rest else "")


def seed_list(results: str) -> str:
    for line in results.splitlines():
        if line.startswith("## Headline: seeds "):
            return line[len("## Headline: seeds "):].split(", recipes")[0]
    return "?"


def speed_lines(benchmarks: str) -> list[str]:
    rows = [row for row in table_rows(benchmarks.split("\n## ", 1)[0].splitlines())
            if row[0].startswith(SPEED_ROWS)]
    machine = next((line[len("Machine: "):].rstrip(".") for line in benchmarks.splitlines()
                    if line.startswith("Machine: ")), "?")
    out = [f"Speed ([BENCHMARKS.md](benchmarks/BENCHMARKS.md), {machine}; each ratio against a "
           "reference doing the same work, measured in the same run):", "",
           "| benchmark | reference | ratio | lmcli |", "|---|---|---|---|"]
    return out + [f"| {' | '.join(row)} |" for row in rows]


def block(results: str, benchmarks: str) -> str:
    return "\n".join([BEGIN, *quality_lines(results), "", *speed_lines(benchmarks), END])


def rewritten(readme: str, results: str, benchmarks: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    return head + block(results, benchmarks) + rest.split(END, 1)[1]


def update(check: bool = False) -> bool:
    """Rewrite README's block (or with ``check`` only compare); whether it was up to date."""
    readme = README.read_text(encoding="utf-8")
    new = rewritten(readme, RESULTS.read_text(encoding="utf-8"), BENCHMARKS.read_text(encoding="utf-8"))
    if new != readme and not check:
        README.write_text(new, encoding="utf-8")
    return new == readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README's block is out of date")
    args = parser.parse_args()
    current = update(check=args.check)
    if args.check and not current:
        sys.exit("README's figures differ from the reports: run python benchmarks/readme_figures.py")


if __name__ == "__main__":
    main()
