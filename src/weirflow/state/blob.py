"""The on-disk format of one key group's state: a self-describing blob.

Layout (big-endian)::

    magic   4 bytes   b"WFKS" (keyed state) or b"WFTM" (timers)
    version 2 bytes   format version, currently 1
    group   4 bytes   the key group the blob belongs to
    crc     4 bytes   CRC-32 of the payload
    payload           weirflow.serde.encode(...) of the content

The magic keeps timer blobs and state blobs from being confused, the key
group lets a reader check it was handed the right blob, and the checksum
catches truncation and bit flips before anything is decoded (unpickling
corrupt bytes is never attempted).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

from weirflow.errors import SerdeError, StateError, UnsupportedFormatVersionError
from weirflow.serde import decode, encode
from weirflow.state.errors import CorruptStateError, UnsupportedStateVersionError

KEYED_STATE_MAGIC: Final = b"WFKS"
TIMERS_MAGIC: Final = b"WFTM"
FORMAT_VERSION: Final = 1

_HEADER = struct.Struct(">4sHII")


def pack_blob(magic: bytes, key_group: int, content: Any) -> bytes:
    """Encode ``content`` as the blob of ``key_group``.

    Args:
        magic: :data:`KEYED_STATE_MAGIC` or :data:`TIMERS_MAGIC`.
        key_group: the key group (0 .. 2**32 - 1).
        content: plain data or picklable values.

    Returns:
        Header plus encoded payload.

    Raises:
        SerdeError: a value in ``content`` cannot be serialized.
    """
    payload = encode(content)
    return _HEADER.pack(magic, FORMAT_VERSION, key_group, zlib.crc32(payload)) + payload


def unpack_blob(magic: bytes, key_group: int, blob: bytes | memoryview) -> Any:
    """Check and decode the blob of ``key_group``.

    Args:
        magic: the magic the caller expects.
        key_group: the key group the caller believes the blob belongs to.
        blob: bytes written by :func:`pack_blob`.

    Returns:
        The decoded content.

    Raises:
        UnsupportedStateVersionError: the version is not one this build reads.
        CorruptStateError: wrong magic, wrong key group, checksum mismatch or
            undecodable payload.
        StateError: the payload pickles a class that cannot be imported here.

        Every message names the key group.
    """
    if len(blob) < _HEADER.size:
        raise CorruptStateError(
            f"key group {key_group}: state blob truncated ({len(blob)} bytes, header needs "
            f"{_HEADER.size})"
        )
    found_magic, version, found_group, crc = _HEADER.unpack_from(blob)
    if found_magic != magic:
        raise CorruptStateError(
            f"key group {key_group}: not a {magic.decode()} blob (magic {found_magic!r})"
        )
    if version != FORMAT_VERSION:
        raise UnsupportedStateVersionError(
            f"key group {key_group}: state format version {version} is not supported (this "
            f"weirflow reads version {FORMAT_VERSION}); it was written by another weirflow"
        )
    if found_group != key_group:
        raise CorruptStateError(
            f"key group {key_group}: blob belongs to key group {found_group}; the state "
            "handle points at the wrong blob"
        )
    payload = memoryview(blob)[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise CorruptStateError(f"key group {key_group}: state blob checksum mismatch")
    try:
        return decode(payload)
    except UnsupportedFormatVersionError as e:
        raise UnsupportedStateVersionError(f"key group {key_group}: {e}") from e
    except SerdeError as e:
        raise CorruptStateError(f"key group {key_group}: state blob does not decode: {e}") from e
    except (AttributeError, ImportError) as e:
        # The checksum matched, so the bytes are intact: a pickled class is missing here.
        raise StateError(
            f"key group {key_group}: state refers to a class this process cannot import: {e}"
        ) from e
