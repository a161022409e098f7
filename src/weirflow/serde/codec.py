"""Value encoding: msgpack (msgspec) for built-in values, pickle only for the rest.

Every encoded value starts with one tag byte saying which codec wrote it, so a
reader never guesses. The msgpack codec covers ``None``, ``bool``, ``int``
(any size), ``float``, ``str``, ``bytes``, and ``list``, ``tuple``, ``dict``,
``set`` and ``frozenset`` built of those, nested to any depth. msgpack has
no tuples, sets or non-string map keys of its own, so those travel as
msgpack extension types (codes below) and come back as the same types.
Anything else (dataclasses, user objects, ``int`` subclasses such as
enums) is pickled; ``msgspec.Struct`` and dataclass values by field name
and schema version, so that they restore into a changed class
(:mod:`weirflow.serde.schema`).

Unpickling runs code, so :func:`decode` refuses pickled bytes unless the
caller says they come from an authenticated source (``allow_pickle=True``):
a checkpoint file whose signature verified, a peer that authenticated.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import msgspec

from weirflow.errors import SerdeError, UnsupportedFormatVersionError
from weirflow.serde.schema import reduce_versioned

TAG_MSGPACK = 0x01
TAG_PICKLE = 0x02

# Extension type codes inside TAG_MSGPACK payloads.
_EXT_TUPLE = 1
_EXT_SET = 2
_EXT_FROZENSET = 3
_EXT_DICT = 4  # a dict with a key msgpack maps cannot hold: flat [k1, v1, k2, v2, ...]
_EXT_BIGINT = 5  # an int outside msgpack's 64-bit range: its decimal digits

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_SCALARS = (type(None), bool, float, str, bytes)
_MAP_KEYS = (str, int, bytes)
_msgpack_encode = msgspec.msgpack.Encoder().encode
_MSGPACK_PREFIX = bytes((TAG_MSGPACK,))


class PickleRefusedError(SerdeError):
    """Pickled bytes came from a source that was not authenticated.

    Decoding them could run any code, so they are refused unread.
    """


def is_plain(value: Any) -> bool:
    """Return whether ``value`` is encoded with msgpack (no pickle) by :func:`encode`.

    Args:
        value: any Python object.

    Returns:
        ``True`` for ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``
        and ``list``/``tuple``/``dict``/``set``/``frozenset`` built only of
        those (exact types, not subclasses); ``False`` otherwise.
    """
    t = type(value)
    if t in _SCALARS or t is int:
        return True
    if t in (list, tuple, set, frozenset):
        return all(is_plain(v) for v in value)
    if t is dict:
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    return False


def _first_foreign_type(value: Any) -> str:
    """Name the type of the first part of ``value`` that :func:`is_plain` rejects."""
    t = type(value)
    if t in (list, tuple, set, frozenset):
        inner = [v for v in value if not is_plain(v)]
    elif t is dict:
        inner = [x for kv in value.items() for x in kv if not is_plain(x)]
    else:
        return t.__qualname__
    return _first_foreign_type(inner[0])


def _to_msgpack_tree(value: Any) -> Any:
    """Rewrite ``value`` (which :func:`is_plain` accepts) into what msgspec encodes natively."""
    t = type(value)
    if t is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return msgspec.msgpack.Ext(_EXT_BIGINT, str(value).encode("ascii"))
    if t in _SCALARS:
        return value
    if t is list:
        return [_to_msgpack_tree(v) for v in value]
    if t is tuple:
        items = [_to_msgpack_tree(v) for v in value]
        return msgspec.msgpack.Ext(_EXT_TUPLE, _msgpack_encode(items))
    if t is set or t is frozenset:
        # Sorted by encoding: set order depends on the salted hash(), the bytes must not.
        items = sorted(_msgpack_encode(_to_msgpack_tree(v)) for v in value)
        code = _EXT_SET if t is set else _EXT_FROZENSET
        return msgspec.msgpack.Ext(code, _msgpack_encode([msgspec.Raw(i) for i in items]))
    # dict
    if all(type(k) in _MAP_KEYS and _is_small_key(k) for k in value):
        return {k: _to_msgpack_tree(v) for k, v in value.items()}
    flat = [_to_msgpack_tree(x) for kv in value.items() for x in kv]
    return msgspec.msgpack.Ext(_EXT_DICT, _msgpack_encode(flat))


def _is_flat_tuple(value: Any) -> bool:
    """Return whether ``value`` is a tuple of scalars and 64-bit ints (a common key shape)."""
    if type(value) is not tuple:
        return False
    for v in value:
        t = type(v)
        if t is int:
            if not _INT64_MIN <= v <= _UINT64_MAX:
                return False
        elif t not in _SCALARS:
            return False
    return True


def _is_small_key(key: Any) -> bool:
    return type(key) is not int or _INT64_MIN <= key <= _UINT64_MAX


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_msgpack_decode(data))
    if code == _EXT_SET:
        return set(_msgpack_decode(data))
    if code == _EXT_FROZENSET:
        return frozenset(_msgpack_decode(data))
    if code == _EXT_DICT:
        flat = _msgpack_decode(data)
        return dict(zip(flat[::2], flat[1::2], strict=True))
    if code == _EXT_BIGINT:
        return int(bytes(data).decode("ascii"))
    raise UnsupportedFormatVersionError(
        f"unknown msgpack extension type {code}: the bytes were written by a newer weirflow; "
        "upgrade weirflow"
    )


_msgpack_decode = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode


def encode_plain(value: Any) -> bytes:
    """Encode a value that :func:`is_plain` accepts, never pickling.

    Args:
        value: built-in data (see :func:`is_plain`).

    Returns:
        Tag byte :data:`TAG_MSGPACK` plus the msgpack payload.

    Raises:
        SerdeError: ``value`` holds something else (its type is named).
    """
    if not is_plain(value):
        raise SerdeError(
            f"a value of type {_first_foreign_type(value)} is not built-in data; only None, "
            "bool, int, float, str, bytes, list, tuple, dict, set and frozenset can be stored here"
        )
    return bytes((TAG_MSGPACK,)) + _msgpack_encode(_to_msgpack_tree(value))


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
    if type(value) in _SCALARS:
        # the commonest keys and values: msgpack holds them as they are
        return _MSGPACK_PREFIX + _msgpack_encode(value)
    if _is_flat_tuple(value):
        # keys such as (user, window start): msgspec writes a tuple as the array
        # _to_msgpack_tree would build, so one Ext around it gives the same bytes
        return _MSGPACK_PREFIX + _msgpack_encode(
            msgspec.msgpack.Ext(_EXT_TUPLE, _msgpack_encode(value))
        )
    if is_plain(value):
        # checked just now: skip encode_plain's second walk over the value
        return _MSGPACK_PREFIX + _msgpack_encode(_to_msgpack_tree(value))
    try:
        out = io.BytesIO()
        out.write(bytes((TAG_PICKLE,)))
        _VersionedPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return out.getvalue()
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise SerdeError(
            f"cannot serialize a value of type {type(value).__qualname__}: {e}; "
            "state and records that leave the process must be plain data or picklable"
        ) from e


class _VersionedPickler(pickle.Pickler):
    """Pickles Struct and dataclass values by field name and schema version
    (:mod:`weirflow.serde.schema`), so that they restore into a changed class."""

    def reducer_override(self, obj: Any) -> Any:
        return reduce_versioned(obj) or NotImplemented


def is_pickled(data: bytes | memoryview) -> bool:
    """Return whether bytes written by :func:`encode` hold a pickle (their tag says so)."""
    return len(data) > 0 and data[0] == TAG_PICKLE


def decode(data: bytes | memoryview, *, allow_pickle: bool = False) -> Any:
    """Decode bytes written by :func:`encode`.

    Args:
        data: the encoded bytes.
        allow_pickle: decode pickled bytes too; pass ``True`` only for bytes
            from an authenticated source (unpickling runs code).

    Returns:
        The value.

    Raises:
        PickleRefusedError: the bytes are pickled and ``allow_pickle`` is false.
        UnsupportedFormatVersionError: the tag byte or an extension type is
            unknown (written by a newer weirflow, or not weirflow data at all).
        SerdeError: the payload is corrupt.
    """
    if not data:
        raise SerdeError("cannot decode an empty byte string: the value is missing or truncated")
    tag = data[0]
    body = memoryview(data)[1:]
    if tag == TAG_PICKLE and not allow_pickle:
        raise PickleRefusedError(
            "refusing to unpickle a value from an unauthenticated source (unpickling runs code)"
        )
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


def check_format_version(found: object, supported: int, what: str, *, oldest: int = 1) -> None:
    """Refuse an on-disk format version this build cannot read.

    Args:
        found: the version read from the file or header.
        supported: the highest version this build reads.
        what: a description of the file for the message, e.g. a path.
        oldest: the lowest version this build still reads.

    Raises:
        UnsupportedFormatVersionError: ``found`` is not an int in
            ``oldest..supported``; the message says whether the file is newer
            or older than what this build reads.
    """
    if type(found) is not int or found < 1:
        raise UnsupportedFormatVersionError(
            f"{what}: format version {found!r} is not supported (this weirflow reads versions "
            f"{oldest}..{supported}); it was written by a newer weirflow, or is not a weirflow file"
        )
    if found > supported:
        raise UnsupportedFormatVersionError(
            f"{what}: format version {found} is not supported (this weirflow reads versions "
            f"{oldest}..{supported}); it was written by a newer weirflow: upgrade weirflow"
        )
    if found < oldest:
        raise UnsupportedFormatVersionError(
            f"{what}: format version {found} was written by an older weirflow and is no longer "
            f"read (this weirflow reads versions {oldest}..{supported}); start the job fresh, or "
            "restore it with the weirflow that wrote it"
        )
