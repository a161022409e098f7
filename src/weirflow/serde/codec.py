"""Value encoding: msgpack (msgspec) for plain built-in values, pickle otherwise.

Every encoded value starts with one tag byte saying which codec wrote it, so a
reader never guesses. msgpack does not round-trip tuples, sets or non-string
structures exactly, so only values made purely of ``None``, ``bool``, ``int``
(64-bit), ``float``, ``str``, ``bytes``, ``list`` and ``dict`` take the
msgpack path; anything else (tuples, dataclasses, user objects) is pickled.

Unpickling runs code: pickled values must only be read from storage the user
configured (checkpoint storage, the event log they pointed at).
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

from weirflow.errors import SerdeError, UnsupportedFormatVersionError

TAG_MSGPACK = 0x01
TAG_PICKLE = 0x02

_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode
_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def is_plain(value: Any) -> bool:
    """Return whether ``value`` round-trips exactly through msgpack.

    Args:
        value: any Python object.

    Returns:
        ``True`` for ``None``, ``bool``, 64-bit ``int``, ``float``, ``str``,
        ``bytes``, and ``list``/``dict`` built only of those (dict keys of
        type ``str``, ``int`` or ``bytes``); ``False`` otherwise.
    """
    t = type(value)
    if t is int:
        return _INT64_MIN <= value <= _UINT64_MAX
    if t in _PLAIN_SCALARS:
        return True
    if t is list:
        return all(is_plain(v) for v in value)
    if t is dict:
        return all(
            type(k) in (str, int, bytes) and is_plain(k) and is_plain(v) for k, v in value.items()
        )
    return False


def encode(value: Any) -> bytes:
    """Encode one value to bytes (tag byte + payload).

    Args:
        value: any picklable Python object.

    Returns:
        The encoded bytes; msgpack when :func:`is_plain` holds, pickle otherwise.

    Raises:
        SerdeError: the value is neither plain nor picklable (a lambda, an
            open file, a lock).
    """
    if is_plain(value):
        return bytes((TAG_MSGPACK,)) + _msgpack_encode(value)
    try:
        return bytes((TAG_PICKLE,)) + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise SerdeError(
            f"cannot serialize a value of type {type(value).__qualname__}: {e}; "
            "state and records that leave the process must be plain data or picklable"
        ) from e


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes written by :func:`encode`.

    Args:
        data: the encoded bytes.

    Returns:
        The value.

    Raises:
        UnsupportedFormatVersionError: the tag byte is unknown (written by a
            newer weirflow, or not weirflow data at all).
        SerdeError: the payload is corrupt.
    """
    if not data:
        raise SerdeError("cannot decode an empty byte string: the value is missing or truncated")
    tag = data[0]
    body = memoryview(data)[1:]
    try:
        if tag == TAG_MSGPACK:
            return _msgpack_decode(body)
        if tag == TAG_PICKLE:
            return pickle.loads(body)
    except (msgspec.DecodeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise SerdeError(f"corrupt encoded value ({len(data)} bytes, codec tag {tag}): {e}") from e
    raise UnsupportedFormatVersionError(
        f"unknown codec tag {tag:#04x}: the bytes were written by a newer weirflow or are not "
        "weirflow data; upgrade weirflow or check the file"
    )


def check_format_version(found: object, supported: int, what: str) -> None:
    """Refuse an on-disk format version this build cannot read.

    Args:
        found: the version read from the file or header.
        supported: the highest version this build reads (versions 1..supported).
        what: a description of the file for the message, e.g. a path.

    Raises:
        UnsupportedFormatVersionError: ``found`` is not an int in ``1..supported``.
    """
    if type(found) is not int or not 1 <= found <= supported:
        raise UnsupportedFormatVersionError(
            f"{what}: format version {found!r} is not supported (this weirflow reads versions "
            f"1..{supported}); it was written by a newer weirflow, or is not a weirflow file"
        )
