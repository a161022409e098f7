"""Full snapshots of the RocksDB keyed backend: raw key ranges copied, encoded canonically later.

The key layout is described in :mod:`weirflow.state.rocksdb`.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from weirflow.errors import UnsupportedFormatVersionError
from weirflow.serde import check_format_version, decode
from weirflow.state.blob import KeyedGroupState, pack_keyed_state
from weirflow.state.descriptors import StateKind
from weirflow.state.errors import UnsupportedStateVersionError
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.rocksdb_files import range_items
from weirflow.state.rocksdb_table import KG_SID

KG = struct.Struct(">H")
"""The key-group prefix of every state key."""
TIMER_QUEUE_KEY = struct.Struct(">BQQ")
"""A key of the ``timers`` column family: domain, biased timestamp, sequence
(see :mod:`weirflow.state.rocksdb_timers`)."""
TIMER_SEQUENCE = struct.Struct(">Q")
"""A value of the ``timer_index`` column family: the timer's sequence."""
NAMES_KEY: Final = b"\xff\xff" + b"names"
"""Where a database records its state names (after every key group: 0xFFFF is no key group)."""
LAYOUT_KEY: Final = b"\xff\xff" + b"layout"
"""Where a database records the version of its key layout."""
LAYOUT_VERSION: Final = 1
"""The key layout version this build writes and reads (see :mod:`weirflow.state.rocksdb`)."""


def scan_state(
    db: Any, key_group_range: KeyGroupRange
) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Copy the raw entries of ``key_group_range``: key group -> [(state id, key, value)]."""
    groups: dict[int, list[tuple[int, bytes, bytes]]] = {}
    start, end = KG.pack(key_group_range.start), KG.pack(key_group_range.end)
    for key, value in range_items(db, start, end):
        kg, sid = KG_SID.unpack_from(key)
        groups.setdefault(kg, []).append((sid, key[KG_SID.size :], value))
    return groups


def read_state_names(db: Any, where: str) -> dict[int, tuple[str, StateKind]]:
    """Return the state names a database holds: state id -> (name, kind).

    Args:
        db: the open database.
        where: its folder, for messages.

    Raises:
        UnsupportedStateVersionError: the database has another key layout
            version than :data:`LAYOUT_VERSION` (or none).
    """
    raw_version = db.get(LAYOUT_KEY)
    try:
        check_format_version(
            None if raw_version is None else decode(raw_version),
            LAYOUT_VERSION,
            f"RocksDB state in {where}",
            oldest=LAYOUT_VERSION,
        )
    except UnsupportedFormatVersionError as e:
        raise UnsupportedStateVersionError(str(e)) from e
    raw = db.get(NAMES_KEY)
    names = {} if raw is None else decode(raw)
    return {sid: (name, kind) for name, (sid, kind) in names.items()}


class RocksDBKeyedStateSnapshot:
    """Raw entries of one RocksDB keyed backend, copied at the synchronous part.

    Args:
        max_parallelism: the job's number of key groups.
        names: state id -> (name, kind).
        groups: key group -> [(state id, key bytes, value bytes)].
    """

    __slots__ = ("_groups", "_max_parallelism", "_names")

    def __init__(
        self,
        max_parallelism: int,
        names: dict[int, tuple[str, StateKind]],
        groups: dict[int, list[tuple[int, bytes, bytes]]],
    ) -> None:
        self._max_parallelism = max_parallelism
        self._names = names
        self._groups = groups

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode one canonical blob per non-empty key group (as the memory backend does).

        Raises:
            SerdeError: a value can be neither msgpack-encoded nor pickled.
        """
        out = {}
        for kg in sorted(self._groups):
            states: KeyedGroupState = {}
            for sid, key, value in self._groups[kg]:
                name, kind = self._names[sid]
                entries = states.setdefault(name, (kind, {}))[1]
                entries[decode(key, allow_pickle=True)] = decode(value, allow_pickle=True)
            out[kg] = pack_keyed_state(kg, self._max_parallelism, states)
        return out
