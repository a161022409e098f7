"""Serde round trips: every value encode() accepts decodes to an equal value."""

from hypothesis import given
from hypothesis import strategies as st

from weirflow.serde import TAG_MSGPACK, TAG_PICKLE, decode, encode, key_bytes, stable_hash

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(values)
def test_encode_decode_round_trip(value: object) -> None:
    data = encode(value)
    assert data[0] in (TAG_MSGPACK, TAG_PICKLE)
    out = decode(data)
    assert out == value
    assert type(out) is type(value)


@given(st.text() | st.binary() | st.integers() | st.tuples(st.text(), st.integers()))
def test_stable_hash_is_a_function_of_key_bytes(key: object) -> None:
    h = stable_hash(key)
    assert 0 <= h < 2**32
    assert stable_hash(decode(encode(key))) == h
    assert key_bytes(key) == key_bytes(decode(encode(key)))
