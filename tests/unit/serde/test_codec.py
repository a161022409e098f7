"""Unit tests of the tagged codec and the stable key hash."""

import subprocess
import sys
import threading

import pytest

from weirflow.errors import SerdeError, UnsupportedFormatVersionError
from weirflow.serde import (
    TAG_MSGPACK,
    TAG_PICKLE,
    PickleRefusedError,
    check_format_version,
    decode,
    encode,
    encode_plain,
    stable_hash,
)


class Point:
    """A user class: only pickle can encode it."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __hash__(self) -> int:
        return self.x


def test_built_in_values_take_msgpack_and_user_objects_pickle() -> None:
    assert encode({"a": [1, 2.5, None, b"x"]})[0] == TAG_MSGPACK
    assert encode((1, ("a", 2)))[0] == TAG_MSGPACK
    assert encode({(1, 2): {3}, "f": frozenset({"x"})})[0] == TAG_MSGPACK
    assert encode(2**70)[0] == TAG_MSGPACK
    assert encode([Point(1)])[0] == TAG_PICKLE
    assert encode((1, Point(2)))[0] == TAG_PICKLE


def test_tuples_sets_and_tuple_keys_come_back_as_themselves() -> None:
    value = {(1, "a"): [(), {2, 3}], "k": frozenset({(4, 5)}), 7: 2**90, None: (True, -(2**65))}
    out = decode(encode(value))
    assert out == value
    assert type(next(iter(out))) is tuple
    assert type(out[(1, "a")][0]) is tuple and type(out[(1, "a")][1]) is set


@pytest.mark.parametrize(
    "key",
    [
        ("u1", 120_000),
        (),
        (1, "a", None, True, 1.5, b"x", 2**64 - 1, -(2**63)),
        (2**64,),
        (("a",),),
    ],
)
def test_flat_tuples_encode_to_the_same_bytes_as_inside_a_list(key: tuple) -> None:
    """Keys such as (user, window start) take a shortcut; stored keys must not change."""
    whole = encode([key])
    assert encode(key)[1:] == whole[2:]  # a one-element list: the tag, then fixarray(1)
    assert decode(encode(key)) == key


def test_set_encoding_does_not_depend_on_the_hash_seed() -> None:
    code = "from weirflow.serde import encode;print(encode({'a','b','c','d','e'}).hex())"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1


def test_pickled_bytes_are_refused_unless_allowed() -> None:
    data = encode(Point(3))
    with pytest.raises(PickleRefusedError, match="unauthenticated"):
        decode(data)
    assert decode(data, allow_pickle=True) == Point(3)


def test_encode_plain_never_pickles() -> None:
    with pytest.raises(SerdeError, match="Point"):
        encode_plain({"a": [Point(1)]})


def test_unpicklable_value_names_its_type() -> None:
    with pytest.raises(SerdeError, match="lock"):
        encode(threading.Lock())


def test_unknown_tag_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UnsupportedFormatVersionError, match="unknown codec tag 0x7f"):
        decode(b"\x7fabc")


def test_empty_and_corrupt_bytes_raise_serde_error() -> None:
    with pytest.raises(SerdeError, match="empty"):
        decode(b"")
    with pytest.raises(SerdeError, match="corrupt"):
        decode(bytes((TAG_PICKLE,)) + b"not a pickle", allow_pickle=True)
    with pytest.raises(SerdeError, match="corrupt"):
        decode(bytes((TAG_MSGPACK,)) + b"\xc1")


def test_format_version_check() -> None:
    check_format_version(1, 2, "x")
    with pytest.raises(UnsupportedFormatVersionError, match="manifest: format version 3"):
        check_format_version(3, 2, "manifest")
    with pytest.raises(UnsupportedFormatVersionError):
        check_format_version("1", 2, "manifest")
    with pytest.raises(UnsupportedFormatVersionError, match="older weirflow"):
        check_format_version(1, 2, "manifest", oldest=2)


def test_stable_hash_is_equal_across_processes() -> None:
    keys = ["u1", "alpha", b"raw", 42, ("a", 1)]
    code = f"from weirflow.serde import stable_hash;print([stable_hash(k) for k in {keys!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
    ).stdout
    assert out.strip() == str([stable_hash(k) for k in keys])
