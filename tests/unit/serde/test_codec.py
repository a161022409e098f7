"""Unit tests of the tagged codec and the stable key hash."""

import subprocess
import sys
import threading

import pytest

from weirflow.errors import SerdeError, UnsupportedFormatVersionError
from weirflow.serde import (
    TAG_MSGPACK,
    TAG_PICKLE,
    check_format_version,
    decode,
    encode,
    stable_hash,
)


def test_plain_values_take_msgpack_and_others_pickle() -> None:
    assert encode({"a": [1, 2.5, None, b"x"]})[0] == TAG_MSGPACK
    assert encode((1, 2))[0] == TAG_PICKLE
    assert encode(2**70)[0] == TAG_PICKLE


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
        decode(bytes((TAG_PICKLE,)) + b"not a pickle")


def test_format_version_check() -> None:
    check_format_version(1, 2, "x")
    with pytest.raises(UnsupportedFormatVersionError, match="manifest: format version 3"):
        check_format_version(3, 2, "manifest")
    with pytest.raises(UnsupportedFormatVersionError):
        check_format_version("1", 2, "manifest")


def test_stable_hash_is_equal_across_processes() -> None:
    keys = ["u1", "alpha", b"raw", 42, ("a", 1)]
    code = f"from weirflow.serde import stable_hash;print([stable_hash(k) for k in {keys!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert out.strip() == str([stable_hash(k) for k in keys])
