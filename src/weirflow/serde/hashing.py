"""Stable hashing of keys: the same key gives the same hash in every process,
on every machine and Python version. Python's ``hash()`` is salted per
process for ``str`` and ``bytes`` and is never used for placement.
"""

from __future__ import annotations

import zlib
from typing import Any

from weirflow.serde.codec import encode


def key_bytes(key: Any) -> bytes:
    """Return the canonical bytes of a key, the input of :func:`stable_hash`.

    Args:
        key: ``str`` (UTF-8), ``bytes`` (as is), ``int`` (decimal ASCII
            prefixed by ``#``), or anything :func:`weirflow.serde.encode` accepts.

    Returns:
        Bytes that are equal for equal keys of these types.
    """
    t = type(key)
    if t is str:
        return key.encode("utf-8")
    if t is bytes:
        return key
    if t is int:
        return b"#%d" % key
    return encode(key)


def stable_hash(key: Any) -> int:
    """Hash a key to an unsigned 32-bit int, stable across processes and versions.

    CRC-32 of :func:`key_bytes`; it is computed in C and mixes short keys well
    enough for placement modulo a few hundred key groups or partitions.

    Args:
        key: a key, see :func:`key_bytes`.

    Returns:
        An int in ``0 .. 2**32 - 1``.
    """
    return zlib.crc32(key_bytes(key))
