"""Units people type and read: durations and counts, parsed and shown exactly."""

from __future__ import annotations

import math

import pytest

from lmcli.errors import UsageError
from lmcli.units import format_count, format_duration, parse_duration, parse_int_list


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1h30m", 5400.0), ("30m90s", 1890.0),
    ("90", 90.0),  # a bare number is seconds
    ("1.5h", 5400.0), ("0.5s", 0.5), ("1.5m", 90.0),
    (" 2H ", 7200.0), ("2S", 2.0),  # case and surrounding spaces do not matter
    ("1h 30m", 5400.0),  # nor spaces between the parts
    ("1m1m", 120.0),  # a unit given twice adds up
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_milliseconds() -> None:
    assert parse_duration("250ms") == 0.25


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_duration_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="empty duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["soon", "h", "1x", "-5s", "1h-30m", "1e3", "nan", "inf", ".5h", "1.s"])
def test_an_unreadable_duration_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="cannot read the duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "0s", "0h0m"])
def test_a_zero_duration_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="must be positive"):
        parse_duration(text)


@pytest.mark.parametrize("seconds,shown", [
    (None, "-"), (math.nan, "-"), (math.inf, "-"),  # unknown
    (-5.0, "0:00"), (0, "0:00"), (0.4, "0:00"), (1.5, "0:02"),
    (59.6, "1:00"), (61, "1:01"), (3599, "59:59"),
    (3599.5, "1:00:00"),  # rounds to a whole hour: the hours column appears
    (3723, "1:02:03"), (36000, "10:00:00"), (90061, "25:01:01"),  # hours do not wrap into days
])
def test_format_duration(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


@pytest.mark.parametrize("n,shown", [
    (0, "0"), (7, "7"), (950, "950"), (999, "999"),
    (12.5, "12.5"), (0.25, "0.25"), (2 / 3, "0.667"),  # fractions keep three digits
    (1000, "1k"), (1234, "1.23k"), (12345, "12.3k"), (99949, "99.9k"),
    (99950, "100k"), (123456, "123k"),  # from 100 on, no decimals
    (1e6, "1M"), (4.56e6, "4.56M"), (1.2e9, "1.2G"), (1.5e12, "1500G"),  # G is the largest unit
    (-7, "-7"), (-1500, "-1.5k"),  # the unit follows the magnitude
])
def test_format_count(n: float, shown: str) -> None:
    assert format_count(n) == shown


@pytest.mark.parametrize("n,shown", [(999.5, "1k"), (999_999, "1M")])
def test_format_count_at_a_unit_boundary(n: float, shown: str) -> None:
    assert format_count(n) == shown


@pytest.mark.parametrize("text,values", [
    ("2000,10000", [2000, 10000]), ("7", [7]), ("0", [0]), ("010", [10]),
    ("2k,10k", [2000, 10000]), (" 1 , 2K ", [1, 2000]),
])
def test_parse_int_list(text: str, values: list[int]) -> None:
    assert parse_int_list(text, "--cutoffs") == values


@pytest.mark.parametrize("text", ["", "1,", "1,,2", "1.5", "-3", "2m", "2kk", "k", "lots", "2k,lots"])
def test_a_bad_int_list_is_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_int_list(text, "--cutoffs")
    assert str(caught.value) == (f"--cutoffs wants integers separated by commas, like 2000,10000; "
                                 f"got {text!r}")
