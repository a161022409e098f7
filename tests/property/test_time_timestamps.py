"""Property: the timestamp check keeps ints, makes integral floats ints, refuses the rest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weirflow import TimestampError
from weirflow.time import check_timestamp_ms


@given(st.integers())
def test_any_int_passes_unchanged(value: int) -> None:
    got = check_timestamp_ms(value, "f")
    assert type(got) is int
    assert got == value


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_an_integral_float_becomes_the_same_int(value: int) -> None:
    got = check_timestamp_ms(float(value), "f")
    assert type(got) is int
    assert got == value


@given(st.floats().filter(lambda f: not f.is_integer()))
def test_any_non_integral_float_is_refused(value: float) -> None:
    with pytest.raises(TimestampError):
        check_timestamp_ms(value, "f")


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.text(),
        st.binary(),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.integers()),
        st.decimals(allow_nan=False),
    )
)
def test_any_non_number_is_refused(value: object) -> None:
    with pytest.raises(TimestampError):
        check_timestamp_ms(value, "f")
