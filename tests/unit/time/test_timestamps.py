"""The check of what a ``timestamp=`` function returns: int ms, integral floats, nothing else."""

from __future__ import annotations

import math

import pytest

from weirflow import TimestampError
from weirflow.time import check_timestamp_ms

ORIGIN = "timestamp function 'stamp' (job.py:3)"


def test_an_int_passes_unchanged() -> None:
    assert check_timestamp_ms(1_700_000_000_123, ORIGIN) == 1_700_000_000_123
    assert check_timestamp_ms(0, ORIGIN) == 0


def test_a_negative_int_is_event_time_before_1970() -> None:
    assert check_timestamp_ms(-86_400_000, ORIGIN) == -86_400_000


def test_a_float_holding_a_whole_number_becomes_that_int() -> None:
    got = check_timestamp_ms(1.7e12, ORIGIN)
    assert type(got) is int
    assert got == 1_700_000_000_000
    assert type(check_timestamp_ms(-5.0, ORIGIN)) is int


@pytest.mark.parametrize("value", [1_700_000_000.5, 0.25, math.nan, math.inf, -math.inf])
def test_a_float_that_is_not_a_whole_number_is_refused(value: float) -> None:
    with pytest.raises(TimestampError, match="not a whole number of ms") as info:
        check_timestamp_ms(value, ORIGIN)
    assert ORIGIN in str(info.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "None (NoneType)"), ("1700000000000", "'1700000000000' (str)"), (b"1", "(bytes)")],
)
def test_none_str_and_other_non_numbers_are_refused_naming_value_and_origin(
    value: object, shown: str
) -> None:
    with pytest.raises(TimestampError) as info:
        check_timestamp_ms(value, ORIGIN)
    message = str(info.value)
    assert ORIGIN in message
    assert shown in message
    assert "int of milliseconds since the epoch" in message


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_refused_although_it_is_an_int(value: bool) -> None:
    with pytest.raises(TimestampError, match="a bool"):
        check_timestamp_ms(value, ORIGIN)


def test_integer_types_with_index_are_accepted() -> None:
    class Ticks:
        def __index__(self) -> int:
            return 42

    class Millis(int):
        pass

    assert check_timestamp_ms(Ticks(), ORIGIN) == 42
    got = check_timestamp_ms(Millis(7), ORIGIN)
    assert type(got) is int
    assert got == 7


def test_timestamp_errors_are_not_retriable() -> None:
    assert TimestampError.retriable is False
