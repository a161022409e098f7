"""The on-disk format of one key group's state: a self-describing blob.

Layout (big-endian)::

    magic   4 bytes   b"WFKS" (keyed state) or b"WFTM" (timers)
    version 2 bytes   format version, currently 2
    group   4 bytes   the key group the blob belongs to
    crc     4 bytes   CRC-32 of the payload
    payload           weirflow.serde.encode(...) of the content

The magic keeps timer blobs and state blobs from being confused, the key
group lets a reader check it was handed the right blob, and the checksum
catches truncation and bit flips before anything is decoded (unpickling
corrupt bytes is never attempted). The CRC is no defence against a forger:
a blob holding a pickle (:func:`blob_uses_pickle`) may only be handed to
:func:`unpack_blob` after the checkpoint file it came in passed its
signature check, which the runtime's restore enforces.

Version 2 encodes tuples, sets and big ints with msgpack (version 1
pickled them); version 1 blobs are refused with a clear message.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

from weirflow.errors import SerdeError, StateError, UnsupportedFormatVersionError
from weirflow.serde import StateSchemaError, check_format_version, decode, encode, is_pickled
from weirflow.state.descriptors import STATE_KINDS, StateKind
from weirflow.state.errors import CorruptStateError, UnsupportedStateVersionError

KEYED_STATE_MAGIC: Final = b"WFKS"
TIMERS_MAGIC: Final = b"WFTM"
FORMAT_VERSION: Final = 2

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
    try:
        check_format_version(
            version, FORMAT_VERSION, f"key group {key_group} state blob", oldest=FORMAT_VERSION
        )
    except UnsupportedFormatVersionError as e:
        raise UnsupportedStateVersionError(str(e)) from e
    if found_group != key_group:
        raise CorruptStateError(
            f"key group {key_group}: blob belongs to key group {found_group}; the state "
            "handle points at the wrong blob"
        )
    payload = memoryview(blob)[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise CorruptStateError(f"key group {key_group}: state blob checksum mismatch")
    try:
        # Pickle is allowed here: the runtime hands over only blobs of verified files.
        return decode(payload, allow_pickle=True)
    except UnsupportedFormatVersionError as e:
        raise UnsupportedStateVersionError(f"key group {key_group}: {e}") from e
    except StateSchemaError:
        raise  # intact bytes of a class that changed: its message says how to fix it
    except SerdeError as e:
        raise CorruptStateError(f"key group {key_group}: state blob does not decode: {e}") from e
    except (AttributeError, ImportError) as e:
        # The checksum matched, so the bytes are intact: a pickled class is missing here.
        raise StateError(
            f"key group {key_group}: state refers to a class this process cannot import: {e}"
        ) from e


def blob_uses_pickle(blob: bytes | memoryview) -> bool:
    """Return whether a blob written by :func:`pack_blob` holds pickled values.

    Reads only the codec tag after the header; nothing is decoded.

    Args:
        blob: the blob's bytes (any content; a blob shorter than the header
            holds no pickle).

    Returns:
        ``True`` when the payload's codec tag is pickle.
    """
    return is_pickled(memoryview(blob)[_HEADER.size :])


KeyedGroupState = dict[str, tuple[StateKind, dict[Any, Any]]]
"""One key group's keyed state: state name -> (kind, key -> value)."""


def pack_keyed_state(key_group: int, max_parallelism: int, states: KeyedGroupState) -> bytes:
    """Encode one key group's keyed state in the canonical form every backend writes.

    Args:
        key_group: the key group.
        max_parallelism: the job's number of key groups, recorded so that a
            restore under another value is refused.
        states: state name -> (kind, entries).

    Returns:
        A :data:`KEYED_STATE_MAGIC` blob whose content is
        ``{"max_parallelism": int, "states": {name: {"kind": str, "entries": dict}}}``.

    Raises:
        SerdeError: a key or value can be neither msgpack-encoded nor pickled.
    """
    content = {
        "max_parallelism": max_parallelism,
        "states": {
            name: {"kind": kind, "entries": entries} for name, (kind, entries) in states.items()
        },
    }
    return pack_blob(KEYED_STATE_MAGIC, key_group, content)


def unpack_keyed_state(key_group: int, blob: bytes, max_parallelism: int) -> KeyedGroupState:
    """Check and decode a blob written by :func:`pack_keyed_state`.

    Args:
        key_group: the key group the blob belongs to.
        blob: its bytes.
        max_parallelism: the restoring job's number of key groups.

    Returns:
        State name -> (kind, entries).

    Raises:
        UnsupportedStateVersionError: unknown format version.
        CorruptStateError: corrupt or malformed blob.
        StateError: written under another ``max_parallelism``. Messages name the key group.
    """
    content = unpack_blob(KEYED_STATE_MAGIC, key_group, blob)
    try:
        found = content["max_parallelism"]
        parsed = {name: (st["kind"], st["entries"]) for name, st in content["states"].items()}
    except (TypeError, KeyError, AttributeError) as e:
        raise CorruptStateError(f"key group {key_group}: malformed state blob content") from e
    if found != max_parallelism:
        raise StateError(
            f"key group {key_group}: state was written with max_parallelism {found}, this job "
            f"uses {max_parallelism}; keys would land in other key groups"
        )
    for name, (kind, entries) in parsed.items():
        if kind not in STATE_KINDS or not isinstance(entries, dict):
            raise CorruptStateError(f"key group {key_group}: malformed entries for state {name!r}")
    return parsed


def check_restored_kinds(
    key_group: int, states: KeyedGroupState, declared: dict[str, StateKind]
) -> None:
    """Refuse restored state whose kind differs from the kind already declared under its name.

    Raises:
        StateError: a name is restored as one kind but declared as another.
    """
    for name, (kind, _) in states.items():
        known = declared.get(name)
        if known is not None and known != kind:
            raise StateError(
                f"key group {key_group}: state {name!r} was saved as {kind} state but is "
                f"declared as {known} state"
            )
