"""Serde round trips: every value encode() accepts decodes to an equal value of the same
types all the way down; built-in values (tuples, sets, tuple keys included) never pickle."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from weirflow.serde import TAG_MSGPACK, decode, encode, encode_plain, key_bytes, stable_hash

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
hashables = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.tuples()
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


def _same_types(a: Any, b: Any) -> bool:
    """Equal values whose every part has the same type (1 == True == 1.0, tuple != list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(
            _same_types(k, _twin(b.keys(), k)) and _same_types(v, b[k]) for k, v in a.items()
        )
    if isinstance(a, list | tuple):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return all(_same_types(x, _twin(b, x)) for x in a)
    return True


def _twin(collection: Any, item: Any) -> Any:
    return next(x for x in collection if x == item)


@given(values)
def test_encode_decode_round_trip(value: object) -> None:
    data = encode(value)
    assert data[0] == TAG_MSGPACK
    assert data == encode_plain(value)
    out = decode(data)
    assert out == value
    assert _same_types(value, out)


@given(st.tuples(values, st.tuples(values, st.tuples(values))))
def test_nested_tuples_stay_tuples(value: tuple) -> None:
    out = decode(encode(value))
    assert type(out) is tuple and type(out[1]) is tuple and type(out[1][1]) is tuple
    assert _same_types(value, out)


@given(st.text() | st.binary() | st.integers() | st.tuples(st.text(), st.integers()) | hashables)
def test_stable_hash_is_a_function_of_key_bytes(key: object) -> None:
    h = stable_hash(key)
    assert 0 <= h < 2**32
    assert stable_hash(decode(encode(key))) == h
    assert key_bytes(key) == key_bytes(decode(encode(key)))
