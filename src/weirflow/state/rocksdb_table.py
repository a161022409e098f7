"""Tables of the RocksDB keyed backend: one declared state name, and its per-key-group views.

Both go through the backend's write-back cache (see :mod:`weirflow.state.rocksdb`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from weirflow.serde import decode
from weirflow.state.table import check_key_group

if TYPE_CHECKING:
    from weirflow.state.rocksdb import RocksDBKeyedStateBackend

MISS: Any = object()
"""Not in the cache (and, as a default, "no default given")."""
ABSENT: Any = object()
"""Cached: the key holds no value (read as missing, or deleted and not yet written back)."""
KG_SID = struct.Struct(">HH")
"""The key prefix: key group, then state id (see :mod:`weirflow.state.rocksdb`)."""


class RocksDBTable:
    """One declared state name in a RocksDB keyed backend (a ``StateTable``).

    Args:
        name: the state name.
        sid: its state id in the key layout.
        backend: the owning backend (its cache and database).
    """

    __slots__ = ("_backend", "_parts", "_range", "name", "sid")

    def __init__(self, name: str, sid: int, backend: RocksDBKeyedStateBackend) -> None:
        self.name = name
        self.sid = sid
        self._backend = backend
        self._range = backend.key_group_range
        self._parts: dict[int, RocksDBPartition] = {}

    def rebind(self, sid: int) -> None:
        """Take state id ``sid`` (a restored database numbered the name so)."""
        self.sid = sid
        self._parts.clear()

    def partition(self, key_group: int) -> RocksDBPartition:
        """Return the mapping view of ``key_group``.

        Raises:
            StateError: the key group is outside the backend's range.
        """
        part = self._parts.get(key_group)
        if part is None:
            check_key_group(self.name, key_group, self._range)
            part = self._parts[key_group] = RocksDBPartition(self, key_group)
        return part

    def get(self, key_group: int, key: Any, default: Any = None) -> Any:
        """Return the value of ``key`` in ``key_group``, or ``default``."""
        v = self._backend._get((self.sid, key_group, key))
        return default if v is ABSENT else v

    def put(self, key_group: int, key: Any, value: Any) -> None:
        """Set the value of ``key`` in ``key_group`` (StateError outside the range)."""
        self.partition(key_group)[key] = value

    def remove(self, key_group: int, key: Any) -> None:
        """Delete ``key`` from ``key_group``; absent keys are ignored."""
        self._backend._set((self.sid, key_group, key), ABSENT)

    def __repr__(self) -> str:
        return f"RocksDBTable({self.name!r}, sid={self.sid})"


class RocksDBPartition(MutableMapping[Any, Any]):
    """One key group of one state name, as a mapping over the backend's cache and database.

    Iteration and ``len`` flush the cache and scan the key group's range
    (for tests and tools; operators use point reads and writes).
    """

    __slots__ = ("_backend", "_kg", "_sid")

    def __init__(self, table: RocksDBTable, key_group: int) -> None:
        self._backend = table._backend
        self._sid = table.sid
        self._kg = key_group

    def get(self, key: Any, default: Any = None) -> Any:
        v = self._backend._get((self._sid, self._kg, key))
        return default if v is ABSENT else v

    def __getitem__(self, key: Any) -> Any:
        v = self._backend._get((self._sid, self._kg, key))
        if v is ABSENT:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        self._backend._set((self._sid, self._kg, key), value)

    def __delitem__(self, key: Any) -> None:
        ck = (self._sid, self._kg, key)
        if self._backend._get(ck) is ABSENT:
            raise KeyError(key)
        self._backend._set(ck, ABSENT)

    def pop(self, key: Any, default: Any = MISS) -> Any:
        ck = (self._sid, self._kg, key)
        v = self._backend._get(ck)
        if v is ABSENT:
            if default is MISS:
                raise KeyError(key)
            return default
        self._backend._set(ck, ABSENT)
        return v

    def __contains__(self, key: object) -> bool:
        return self._backend._get((self._sid, self._kg, key)) is not ABSENT

    def __iter__(self) -> Iterator[Any]:
        backend = self._backend
        backend.flush()
        prefix = KG_SID.pack(self._kg, self._sid)
        end = KG_SID.pack(self._kg, self._sid + 1)
        keys = [
            decode(k[len(prefix) :], allow_pickle=True)
            for k, _ in backend._range_items(prefix, end)
        ]
        return iter(keys)

    def __len__(self) -> int:
        return sum(1 for _ in self)
