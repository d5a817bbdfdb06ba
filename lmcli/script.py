"""Simplified and traditional Chinese at the boundary: which script a vocabulary or a text
is written in, and converting what users type into the model's script (and the model's
output into the script they read), through OpenCC.

Conversion is vocabulary-aware. OpenCC converts first, with its phrase tables choosing
among one-to-many mappings (发 -> 發 in 發展, 髮 in 頭髮); a character (a word, at word
level) the vocabulary still does not know is then tried as typed and through OpenCC's
other single-character conversions (regional variants such as 裡 / 裏 among them), and
the first form the vocabulary knows is kept. Text without CJK characters, and models
whose vocabulary is in neither script, pass through untouched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from lmcli.errors import SettingError, escape
from lmcli.tokenizers import UNK_ID, WHITESPACE, Tokenizer

Script = Literal["traditional", "simplified", "neither"]
SCRIPTS = ("traditional", "simplified")
DISPLAY_CHOICES = ("auto", "simplified", "traditional", "model")

# CJK ideographs: the unified blocks (basic, extensions A to H) and the compatibility block.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003347f]")
_WORD = re.compile(f"[^{re.escape(WHITESPACE)}]+")
# The conversion into each script, then every other single-character conversion to try
# for what the vocabulary does not know: regional variants first, the other script last
# (a traditional corpus may still hold a simplified form of a rare character).
_INTO = {"traditional": "s2t", "simplified": "t2s"}
_FALLBACKS = {
    "traditional": ("s2t", "s2tw", "s2hk", "t2tw", "t2hk", "tw2t", "hk2t", "t2s"),
    "simplified": ("t2s", "tw2s", "hk2s", "s2t", "s2tw", "s2hk"),
}
# A vocabulary is in one script when at least this many of its characters tell that
# script, and this many times as many as tell the other: a traditional vocabulary also
# holds characters that s2t would change (里, 干, 后: valid in both scripts).
MIN_EVIDENCE = 3
DOMINANCE = 3
# Unknown characters named in one message at most.
NAMED_AT_MOST = 10


@functools.cache
def _opencc(config: str):  # -> opencc.OpenCC; made once per config (loading its tables costs)
    import opencc

    return opencc.OpenCC(config)


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def _changed(text: str, config: str) -> int:
    """CJK characters of ``text`` that the conversion ``config`` changes."""
    converted = _opencc(config).convert(text)
    if len(converted) != len(text):  # a phrase changed length: compare character by character
        converted = "".join(_opencc(config).convert(char) for char in text)
    return sum(1 for a, b in zip(text, converted) if a != b and _CJK.match(a))


def _evidence(text: str) -> tuple[int, int]:
    """(characters only a traditional text would hold, ... only a simplified one): those
    t2s changes and those s2t changes."""
    if not has_cjk(text):
        return 0, 0
    return _changed(text, "t2s"), _changed(text, "s2t")


def vocabulary_script(tokens: Iterable[str]) -> Script:
    """The script a vocabulary (or a text) is written in; "neither" when it holds too few
    characters that differ between the scripts, or both kinds alike."""
    traditional, simplified = _evidence("\n".join(tokens))
    if traditional >= MIN_EVIDENCE and traditional >= DOMINANCE * simplified:
        return "traditional"
    if simplified >= MIN_EVIDENCE and simplified >= DOMINANCE * traditional:
        return "simplified"
    return "neither"


def text_script(text: str) -> Literal["traditional", "simplified"] | None:
    """The script someone typed ``text`` in, by a majority of the characters that tell;
    None when none tells (明月, English) or as many tell either way."""
    traditional, simplified = _evidence(text)
    if traditional > simplified:
        return "traditional"
    if simplified > traditional:
        return "simplified"
    return None


def choose_display_script(requested: str, typed_texts: Sequence[str], model_script: str) -> str:
    """The script to show a model's output in: "auto" means the one the user typed their
    texts in, else the model's own ("model" leaves the output as the model writes it)."""
    if requested not in DISPLAY_CHOICES:
        raise SettingError(f"{{script}} must be one of {', '.join(DISPLAY_CHOICES)}, got "
                           f"{escape(repr(requested))}")
    if requested != "auto":
        return requested
    typed = text_script("\n".join(typed_texts))
    if typed is not None:
        return typed
    return model_script if model_script in SCRIPTS else "model"


class ScriptConverter:
    """Converts text between what users type and read and the script of one model's
    vocabulary (``script``: "traditional", "simplified" or "neither")."""

    def __init__(self, tokenizer: Tokenizer, script: str) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self._known: dict[str, bool] = {}
        self._choice: dict[tuple[str, str], str] = {}

    @property
    def active(self) -> bool:
        return self.script in SCRIPTS

    def known(self, unit: str) -> bool:
        """Whether the vocabulary holds ``unit`` (a character, or a word at word level)."""
        found = self._known.get(unit)
        if found is None:
            ids = self.tokenizer.encode(unit.lower() if self.tokenizer.lowercase else unit)
            found = self._known[unit] = bool(ids) and UNK_ID not in ids
        return found

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where the vocabulary's units sit in ``text``: words at word level, else characters."""
        if self.tokenizer.level == "word":
            return [match.span() for match in _WORD.finditer(text)]
        return [(i, i + 1) for i in range(len(text))]

    def _missing(self, text: str) -> set[str]:
        """The units of ``text`` holding CJK characters that the vocabulary lacks."""
        units = set(_WORD.findall(text)) if self.tokenizer.level == "word" else set(text)
        return {unit for unit in units if has_cjk(unit) and not self.known(unit)}

    def to_model(self, text: str) -> str:
        """``text`` in the model's script, each unit in a form the vocabulary knows where
        one exists."""
        if not self.active or not has_cjk(text):
            return text
        converted = _opencc(_INTO[self.script]).convert(text)
        missing = self._missing(converted)
        if not missing:
            return converted
        aligned = len(converted) == len(text)  # phrases nearly always keep the length
        parts, end = [], 0
        for start, stop in self._spans(converted):
            unit = converted[start:stop]
            if unit in missing:
                parts += [converted[end:start], self._fallback(text[start:stop] if aligned else unit, unit)]
                end = stop
        return "".join(parts) + converted[end:]

    def _fallback(self, typed: str, converted: str) -> str:
        """The first form of ``typed`` the vocabulary knows: as typed, then through each
        single-character conversion in turn; ``converted`` if none is known."""
        key = (typed, converted)
        if key not in self._choice:
            candidates = [typed] + [_opencc(config).convert(typed) for config in _FALLBACKS[self.script]]
            self._choice[key] = next(filter(self.known, candidates), converted)
        return self._choice[key]

    def to_script(self, text: str, script: str) -> str:
        """Model output shown in ``script`` ("simplified", "traditional", or "model" for
        as the model wrote it)."""
        if script == "model" or script == self.script or not has_cjk(text):
            return text
        if script not in SCRIPTS:
            raise ValueError(f"unknown script {script!r}")
        return _opencc(_INTO[script]).convert(text)

    def unknown(self, text: str) -> list[str]:
        """The units of (already converted) ``text`` that still map to ``<UNK>``, each once,
        in order: characters, or words at word level."""
        level, text = self.tokenizer.level, self.tokenizer.normalize(text)
        if level == "word":
            units = _WORD.findall(text)
        else:  # sentencepiece reads spaces as word boundaries, never as <UNK>
            units = [char for char in text if level == "char" or char not in WHITESPACE]
        return [unit for unit in dict.fromkeys(units) if not self.known(unit)]

    def segments(self, typed: str) -> list[tuple[str, bool]]:
        """``typed`` cut into runs, each marked True where the model reads ``<UNK>`` (for
        showing the unknown parts of what the user typed)."""
        text = self.tokenizer.normalize(typed)
        converted = self.to_model(text)
        shown = text if len(converted) == len(text) else converted
        unknown = set(self.unknown(converted))
        runs: list[tuple[str, bool]] = []
        end = 0
        for start, stop in self._spans(converted) if unknown else []:
            if converted[start:stop] in unknown:
                runs += [(shown[end:start], False), (shown[start:stop], True)]
                end = stop
        runs.append((shown[end:], False))
        return [run for run in runs if run[0]]


class PreparedText(NamedTuple):
    text: str  # in the model's script
    unknown: list[str]  # what the vocabulary still lacks, each once (empty when required)


def prepare_user_text(text: str, converter: ScriptConverter, *, what: str, required: bool
                      ) -> PreparedText:
    """A setting's text (``what`` names the setting: "acrostic", "prime") in the model's
    script. Where the vocabulary lacks some of it, ``required`` text is refused with a
    message naming the characters and the setting; otherwise they are given back for the
    caller to warn about."""
    converted = converter.to_model(text)
    unknown = converter.unknown(converted)
    if unknown and required:
        raise SettingError(f"{{{what}}}: {escape(_listing(unknown))} "
                           f"{'is' if len(unknown) == 1 else 'are'} not in the model's vocabulary")
    return PreparedText(converted, unknown)


def _listing(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c", at most NAMED_AT_MOST named."""
    named = list(items[:NAMED_AT_MOST])
    if len(items) > len(named):
        named.append(f"{len(items) - len(named)} more")
    return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
