"""The bundled Song ci corpus (corpora/song_ci.txt) and the ci tune table (lmcli/data/ci_tunes.tsv)
are well-formed, agree with each other and with corpora/README.md.  Both are built by
corpora/build_ci.py; these checks read the shipped files only (no network, no build-time
dependencies)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpora" / "song_ci.txt"
README = REPO / "corpora" / "README.md"
TABLE = REPO / "lmcli" / "data" / "ci_tunes.tsv"

IDEOGRAPH = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
MARKS = "，。、？！；："
# A ci: lines of ideographs, each followed by one mark, the last by a sentence end.
CI = re.compile(f"(?:[{IDEOGRAPH}]+[{MARKS}])*[{IDEOGRAPH}]+[。？！]")
LINE = re.compile(f"([{IDEOGRAPH}]+)([{MARKS}])")
TOKEN = re.compile(f"([1-9][0-9]*)([{MARKS}])(\\*?)")
COLUMNS = ["tune", "alias", "count", "total", "pattern"]

Shape = tuple[tuple[int, str], ...]


@pytest.fixture(scope="module")
def corpus_text() -> str:
    return CORPUS.read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def corpus(corpus_text: str) -> list[str]:
    return corpus_text.split("\n")[:-1]


@pytest.fixture(scope="module")
def table() -> list[dict[str, str]]:
    lines = TABLE.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "", "the table ends with a newline"
    assert lines[0].split("\t") == COLUMNS
    rows = [dict(zip(COLUMNS, line.split("\t"), strict=True)) for line in lines[1:-1]]
    assert rows
    return rows


def shape_of(pattern: str) -> Shape:
    """The (length, mark) lines of a pattern; ``|`` (a stanza break) is not a line."""
    shape = []
    for token in pattern.split(" "):
        if token == "|":
            continue
        match = TOKEN.fullmatch(token)
        assert match, f"bad pattern token {token!r} in {pattern!r}"
        shape.append((int(match[1]), match[2]))
    return tuple(shape)


def readme_sha256(section: str) -> str:
    """The sha256 the README gives in the section whose heading starts with ``section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## `{section}`")
    end = text.find("\n## ", start + 1)
    match = re.search(r"\*\*sha256:\*\* `([0-9a-f]{64})`", text[start:end if end > 0 else None])
    assert match, f"no sha256 in the README section for {section}"
    return match[1]


def test_corpus_is_one_well_formed_ci_per_line(corpus_text: str, corpus: list[str]) -> None:
    assert corpus_text.endswith("\n") and "\r" not in corpus_text
    assert len(corpus) > 19_000
    for number, line in enumerate(corpus, 1):
        assert CI.fullmatch(line), f"song_ci.txt line {number} is not ideographs and marks: {line[:40]!r}"
    assert len(set(corpus)) == len(corpus), "exact duplicates were to be dropped"


def test_corpus_matches_the_readme_sha256() -> None:
    assert hashlib.sha256(CORPUS.read_bytes()).hexdigest() == readme_sha256("song_ci.txt")


def test_table_matches_the_readme_sha256() -> None:
    assert hashlib.sha256(TABLE.read_bytes()).hexdigest() == readme_sha256("lmcli/data/ci_tunes.tsv")


def test_table_rows_are_well_formed(table: list[dict[str, str]]) -> None:
    names = [row["tune"] for row in table]
    assert len(set(names)) == len(names), "one row per tune"
    totals = []
    for row in table:
        assert re.fullmatch(f"[{IDEOGRAPH}]+", row["tune"]), row
        assert re.fullmatch(f"[{IDEOGRAPH}]+", row["alias"]), row
        count, total = int(row["count"]), int(row["total"])
        assert 5 <= count <= total, row
        totals.append(total)
        shape = shape_of(row["pattern"])
        assert sum(length for length, _ in shape) > 0
        last = row["pattern"].split(" ")[-1]
        assert last.endswith("*") and last[-2] in "。？！", f"{row['tune']}: the last line ends a sentence and rhymes"
        assert not row["pattern"].startswith("|") and " | |" not in row["pattern"]
    assert totals == sorted(totals, reverse=True), "rows are sorted by total, most common first"


def test_known_tunes_are_in_the_table_under_either_script(table: list[dict[str, str]]) -> None:
    by_name = {row["tune"]: row for row in table} | {row["alias"]: row for row in table}
    lengths = {
        name: [length for length, _ in shape_of(by_name[name]["pattern"])]
        for name in ("浣溪沙", "菩萨蛮", "菩薩蠻", "水调歌头", "水調歌頭", "西江月", "念奴娇", "念奴嬌")
    }
    # The classical forms (钦定词谱's main forms) where the source's punctuation agrees with them.
    assert lengths["浣溪沙"] == [7] * 6
    assert lengths["菩萨蛮"] == lengths["菩薩蠻"] == [7, 7, 5, 5, 5, 5, 5, 5]
    assert lengths["西江月"] == [6, 6, 7, 6] * 2
    assert by_name["水调歌头"] is by_name["水調歌頭"]
    assert sum(lengths["水调歌头"]) == 95 and sum(lengths["念奴娇"]) == 100
    assert any(len({length for length, _ in shape_of(row["pattern"])}) > 1 for row in table)


def test_table_counts_are_consistent_with_the_corpus(
    corpus: list[str], table: list[dict[str, str]]
) -> None:
    """The corpus has no tune names, so check what it can: each modal shape occurs at least
    ``count`` times in it, and the tunes' ci fit in it."""
    shapes = Counter(tuple((len(words), mark) for words, mark in LINE.findall(line)) for line in corpus)
    for row in table:
        shape = shape_of(row["pattern"])
        assert shapes[shape] >= int(row["count"]), f"{row['tune']}: {row['count']} ci of a shape seen {shapes[shape]} times"
    assert sum(int(row["total"]) for row in table) <= len(corpus)


def test_table_is_package_data() -> None:
    data = resources.files("lmcli").joinpath("data", "ci_tunes.tsv")
    assert data.is_file()
    assert data.read_text(encoding="utf-8").startswith("\t".join(COLUMNS) + "\n")
