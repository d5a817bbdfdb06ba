"""Parsing and showing the units people type and read: durations and counts."""

from __future__ import annotations

import math
import re

from lmcli.errors import SettingError, UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)?", re.IGNORECASE)  # ms before m
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``1h30m`` or a bare number of seconds."""
    spec = text.strip().lower().replace(" ", "")
    if not spec:
        raise UsageError("empty duration; write it like 90s, 15m, 2h or 1h30m")
    position = 0
    total = 0.0
    while position < len(spec):
        match = _PART.match(spec, position)
        if not match or match.end() == position:
            raise UsageError(f"cannot read the duration {text!r}; write it like 90s, 15m, 2h or 1h30m")
        total += float(match.group(1)) * _SECONDS[match.group(2)]
        position = match.end()
    if not math.isfinite(total) or total <= 0:
        raise UsageError(f"a duration must be positive, got {text!r}")
    return total


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` style, or ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_count(n: float) -> str:
    """``950``, ``12.3k``, ``4.56M``, ``1.2G``; a count that rounds up to the next unit is
    shown in it (999,999 is ``1M``)."""
    scales = (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9))
    index = max([i for i, (_, size) in enumerate(scales) if abs(n) >= size] or [0])
    while True:
        unit, size = scales[index]
        value = n / size
        if not unit and float(n).is_integer():
            text = f"{n:.0f}"
        else:
            text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        if abs(float(text)) < 1000 or index + 1 == len(scales):
            return text + unit
        index += 1


def parse_int_list(text: str, flag: str = "a list") -> list[int]:
    """``2000,10000`` -> [2000, 10000]; ``k`` for thousands is allowed (``2k,10k``). ``flag``
    names what is read in the error: a setting as ``{name}``, or plain words."""
    values = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(k?)", part.lower())
        if not match:
            raise SettingError(f"{flag} wants integers separated by commas, like 2000,10000; got {text!r}")
        values.append(int(match.group(1)) * (1000 if match.group(2) else 1))
    return values


def parse_float_list(text: str, flag: str = "a list") -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3]; ``flag`` names what is read in the error, as for
    :func:`parse_int_list`."""
    try:
        return [float(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise SettingError(f"{flag} wants numbers separated by commas, like 0.7,0.3; got {text!r}") from None

