"""Rhyme books: which rhyme groups a token's last syllable belongs to.

A book maps a vocabulary token to the set of groups it can rhyme in (a character with two
readings, like 看 in level and departing tone, is in both). Three books:

- ``pingshui``: the Pingshui table (平水韻) of classical verse, 106 groups, each with its
  tone class (level 平 or oblique 仄). Shipped as ``lmcli/data/pingshui.tsv`` (built by
  ``corpora/build_pingshui.py``; provenance there). Simplified forms rhyme as their
  traditional originals.
- ``pinyin``: modern Mandarin finals from ``pypinyin``, merged into the fourteen rhymes of
  the 中华新韵 (so 安 and 天 rhyme, as they do for a modern reader).
- ``cmu``: English, by the CMU pronouncing dictionary (``pronouncing``): two words rhyme
  when their rhyming parts (last stressed vowel onwards) are equal.

The decoder works with the token x group table that :func:`group_table` builds.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import torch

from lmcli.errors import SettingError

BOOKS = ("pingshui", "pinyin", "cmu")
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def is_ideograph(token: str) -> bool:
    return len(token) == 1 and _CJK.match(token) is not None


@dataclass(frozen=True)
class RhymeBook:
    name: str
    groups: tuple[str, ...]  # group names, index = group id
    level: tuple[bool, ...]  # per group: a level-tone (平) group (Pingshui only; else all True)
    members: dict[str, frozenset[int]]  # a character or word -> its group ids

    def groups_of(self, token: str) -> frozenset[int]:
        return self.members.get(self.key(token), frozenset())

    def key(self, token: str) -> str:
        if self.name == "cmu":  # words: case and surrounding punctuation do not rhyme
            return token.lower().strip("".join(_PUNCTUATION))
        return token


_PUNCTUATION = frozenset(chr(c) for c in range(0x3000) if unicodedata.category(chr(c)).startswith("P"))


@functools.cache
def pingshui() -> RhymeBook:
    text = resources.files("lmcli").joinpath("data/pingshui.tsv").read_text(encoding="utf-8")
    groups, level, members = [], [], {}
    for number, row in enumerate(text.splitlines()[1:]):
        name, tone, chars, simplified = row.split("\t")
        groups.append(name)
        level.append(tone == "ping")
        for char in chars + simplified:
            members[char] = members.get(char, frozenset()) | {number}
    return RhymeBook("pingshui", tuple(groups), tuple(level), members)


# The fourteen rhymes of 中华新韵, by pinyin final (pypinyin's strict finals; "-i" is the
# apical vowel of zhi chi shi ri zi ci si, which rhymes with er, not with i).
_NEW_RHYMES = {
    "麻": "a ia ua", "波": "o e uo", "皆": "ie ve", "开": "ai uai", "微": "ei uei",
    "豪": "ao iao", "尤": "ou iou", "寒": "an ian uan van", "文": "en in uen vn",
    "唐": "ang iang uang", "庚": "eng ing ong iong ueng", "齐": "i v", "支": "-i er",
    "姑": "u",
}
_FINAL_TO_RHYME = {final: rhyme for rhyme, finals in _NEW_RHYMES.items() for final in finals.split()}
_APICAL = re.compile(r"^(zh|ch|sh|r|z|c|s)i$")


@functools.cache
def pinyin_book() -> RhymeBook:
    return RhymeBook("pinyin", tuple(_NEW_RHYMES), (True,) * len(_NEW_RHYMES), _PinyinMembers())


class _PinyinMembers(dict):
    """Looked up one character at a time (pypinyin holds 40,000+ characters)."""

    def get(self, char: str, default: frozenset[int] = frozenset()) -> frozenset[int]:
        if char not in self:
            self[char] = _pinyin_groups(char)
        return super().get(char, default)


def _pinyin_groups(char: str) -> frozenset[int]:
    if not is_ideograph(char):
        return frozenset()
    from pypinyin import Style, pinyin
    names = list(_NEW_RHYMES)
    readings = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    rhymes = (_FINAL_TO_RHYME.get(final_of(s)) for s in (readings[0] if readings else []))
    return frozenset(names.index(r) for r in rhymes if r)


_INITIAL = re.compile(r"^(zh|ch|sh|[bpmfdtnlgkhjqxrzcs])")
_GLIDES = (("yu", "v"), ("yi", "i"), ("y", "i"), ("wu", "u"), ("w", "u"))
_CONTRACTED = {"iu": "iou", "ui": "uei", "un": "uen"}


def final_of(syllable: str) -> str:
    """The full final of a toneless pinyin syllable (``v`` for ü): ``you`` -> iou,
    ``jun`` -> vn, ``shi`` -> -i."""
    if _APICAL.match(syllable):
        return "-i"
    initial = _INITIAL.match(syllable)
    if initial:
        final = syllable[initial.end():]
        if initial.group() in ("j", "q", "x") and final.startswith("u"):
            final = "v" + final[1:]
        return _CONTRACTED.get(final, final)
    for glide, vowel in _GLIDES:
        if syllable.startswith(glide):
            return vowel + syllable[len(glide):]
    return syllable


@functools.cache
def cmu_book() -> RhymeBook:
    import pronouncing
    pronouncing.init_cmu()
    parts: dict[str, int] = {}
    members: dict[str, frozenset[int]] = {}
    for word, phones in pronouncing.pronunciations:
        part = pronouncing.rhyming_part(phones)
        group = parts.setdefault(part, len(parts))
        members[word] = members.get(word, frozenset()) | {group}
    return RhymeBook("cmu", tuple(parts), (True,) * len(parts), members)


def book(name: str) -> RhymeBook:
    if name == "pingshui":
        return pingshui()
    if name == "pinyin":
        return pinyin_book()
    if name == "cmu":
        return cmu_book()
    raise SettingError(f"{{rhyme}}: unknown rhyme book {name!r} (choose from {', '.join(BOOKS)})")


def group_table(rhymes: RhymeBook, tokens: Sequence[str], usable: torch.Tensor,
                level_only: bool = False) -> torch.Tensor:
    """(vocab, groups) bool: token t can end a line rhyming in group g. Only tokens marked
    ``usable`` count; with ``level_only`` only level-tone (平) groups (regulated verse)."""
    table = torch.zeros((len(tokens), len(rhymes.groups)), dtype=torch.bool)
    for token_id, token in enumerate(tokens):
        if usable[token_id]:
            for group in rhymes.groups_of(token):
                if rhymes.level[group] or not level_only:
                    table[token_id, group] = True
    return table
