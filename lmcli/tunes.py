"""Tune patterns (词牌) of Song ci: the shape each tune's lyrics take.

The table ``lmcli/data/ci_tunes.tsv`` is derived from the bundled Song ci corpus by
``corpora/build_ci.py`` (how, and with what counts: ``corpora/README.md``). A pattern is
space-separated line specs, each ``<ideographs><mark>`` with ``*`` when the line ends on a
rhyme, and ``|`` between stanzas: ``7，* 7。* 7。* | 7，7。* 7。*``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_SPEC = re.compile(r"^(\d+)(\D)(\*?)$")


@dataclass(frozen=True)
class TuneLine:
    length: int
    mark: str
    rhyme: bool
    stanza_end: bool = False


@dataclass(frozen=True)
class Tune:
    name: str
    alias: str  # the name in the other script
    count: int  # ci of the corpus with this shape
    total: int  # ci of the corpus under this tune
    lines: tuple[TuneLine, ...]

    @property
    def pattern(self) -> str:
        parts = []
        for line in self.lines:
            parts.append(f"{line.length}{line.mark}{'*' if line.rhyme else ''}")
            if line.stanza_end:
                parts.append("|")
        return " ".join(parts)


def parse_pattern(pattern: str) -> tuple[TuneLine, ...]:
    lines: list[TuneLine] = []
    for part in pattern.split():
        if part == "|":
            if lines:
                last = lines[-1]
                lines[-1] = TuneLine(last.length, last.mark, last.rhyme, stanza_end=True)
            continue
        match = _SPEC.match(part)
        if not match:
            raise ValueError(f"bad line spec {part!r} in tune pattern {pattern!r}")
        lines.append(TuneLine(int(match.group(1)), match.group(2), bool(match.group(3))))
    return tuple(lines)


@functools.cache
def tunes() -> dict[str, Tune]:
    """Every tune of the table, by its name and by its alias."""
    text = resources.files("lmcli").joinpath("data/ci_tunes.tsv").read_text(encoding="utf-8")
    rows = text.splitlines()
    header = rows[0].split("\t")
    found: dict[str, Tune] = {}
    for row in rows[1:]:
        field = dict(zip(header, row.split("\t")))
        tune = Tune(field["tune"], field.get("alias", ""), int(field["count"]), int(field["total"]),
                    parse_pattern(field["pattern"]))
        found.setdefault(tune.name, tune)
        if tune.alias:
            found.setdefault(tune.alias, tune)
    return found


def find_tune(name: str) -> Tune | None:
    name = name.strip()
    return tunes().get(name)


def all_tunes() -> list[Tune]:
    """Each tune once, the most common first."""
    unique = {id(t): t for t in tunes().values()}
    return sorted(unique.values(), key=lambda t: (-t.count, t.name))
