"""Tables of the RocksDB keyed backend and the write-back cache in front of the database.

A :class:`RocksDBTable` is one declared state name; its :class:`RocksDBPartition`
(one per key group) is what operators read and write per record. Each
partition caches entries in two plain dicts keyed by the user key, so a read
of a cached key is one dict lookup: no key encoding, no RocksDB call.

The cache (:class:`WriteBackCache`) is bounded by generations instead of an
exact LRU list, which would cost a reordering on every hit: entries loaded
or written since the last rotation are *young*, the rest *old*. A read that
finds an entry old moves it to young. When the young entries of all
partitions together exceed half the capacity, the old ones are written back
(the dirty ones) and dropped, and young becomes old. A key used at least
once per generation therefore stays cached, and at most ``capacity``
entries are held.

Dirty entries (written, or read while holding a mutable value the caller may
change in place) reach RocksDB in one write batch per rotation and at every
snapshot (:meth:`WriteBackCache.flush`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from weirflow.serde import decode, encode
from weirflow.state.table import check_key_group

if TYPE_CHECKING:
    from weirflow.state.rocksdb import RocksDBKeyedStateBackend

MISS: Any = object()
"""Not in the cache (and, as a default, "no default given")."""
ABSENT: Any = object()
"""Cached: the key holds no value (read as missing, or deleted and not yet written back)."""
IMMUTABLE: Final = frozenset({int, float, str, bytes, bool, type(None), frozenset})
"""Value types a reader cannot change in place: reading one does not make its entry dirty."""
KG_SID = struct.Struct(">HH")
"""The key prefix: key group, then state id (see :mod:`weirflow.state.rocksdb`)."""


class WriteBackCache:
    """The cached entries of every partition of one keyed backend, and their write-back.

    Args:
        capacity: the most entries held at once (young and old together).
        get: reads one database key (``None`` when absent).
        write: applies a list of ``(db_key, encoded value or None to delete)`` atomically.
    """

    __slots__ = ("_get", "_write", "capacity", "partitions", "young")

    def __init__(
        self,
        capacity: int,
        get: Callable[[bytes], bytes | None],
        write: Callable[[list[tuple[bytes, bytes | None]]], None],
    ) -> None:
        self.capacity = capacity
        self._get = get
        self._write = write
        self.partitions: list[RocksDBPartition] = []
        self.young = 0

    def load(self, part: RocksDBPartition, key: Any) -> Any:
        """Return ``key``'s value (or ``ABSENT``) from the old generation or the database.

        The entry becomes young; a mutable value becomes dirty (see the module).
        """
        v = part.old.pop(key, MISS)
        if v is MISS:
            raw = self._get(part.prefix + encode(key))
            v = ABSENT if raw is None else decode(raw, allow_pickle=True)
        if v is not ABSENT and type(v) not in IMMUTABLE:
            part.dirty.add(key)
        self.admit(part, key, v)
        return v

    def admit(self, part: RocksDBPartition, key: Any, value: Any) -> None:
        """Put ``key`` (absent from ``part.young``) into the young generation."""
        part.old.pop(key, None)
        part.young[key] = value
        self.young += 1
        if self.young > self.capacity // 2:
            self.rotate()

    def rotate(self) -> None:
        """Write back and drop the old generation; the young one becomes old."""
        batch: list[tuple[bytes, bytes | None]] = []
        for part in self.partitions:
            old, dirty = part.old, part.dirty
            if dirty:
                for key in [k for k in dirty if k in old]:
                    dirty.discard(key)
                    batch.append(part.staged(key, old[key]))
            part.old, part.young = part.young, {}
        self.young = 0
        if batch:
            self._write(batch)

    def flush(self) -> None:
        """Write every dirty entry in one batch; entries stay cached, now clean."""
        batch: list[tuple[bytes, bytes | None]] = []
        for part in self.partitions:
            if part.dirty:
                young, old = part.young, part.old
                for key in part.dirty:
                    v = young.get(key, MISS)
                    batch.append(part.staged(key, old[key] if v is MISS else v))
                part.dirty.clear()
        if batch:
            self._write(batch)

    def dirty(self) -> bool:
        """Return whether an entry waits to be written back."""
        return any(part.dirty for part in self.partitions)

    def clear(self) -> None:
        """Drop every cached entry, dirty ones included (the database is replaced or closed)."""
        for part in self.partitions:
            part.young, part.old = {}, {}
            part.dirty.clear()
        self.young = 0


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
        """Take state id ``sid`` (a restored database numbered the name so).

        Partitions handed out before keep working: they hold no entry (the
        cache was cleared) and address the new id from now on.
        """
        self.sid = sid
        for part in self._parts.values():
            part.prefix = KG_SID.pack(part.key_group, sid)

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
        if key_group not in self._range:
            return default
        return self.partition(key_group).get(key, default)

    def put(self, key_group: int, key: Any, value: Any) -> None:
        """Set the value of ``key`` in ``key_group`` (StateError outside the range)."""
        self.partition(key_group)[key] = value

    def remove(self, key_group: int, key: Any) -> None:
        """Delete ``key`` from ``key_group``; absent keys are ignored."""
        if key_group in self._range:
            self.partition(key_group)[key] = ABSENT

    def __repr__(self) -> str:
        return f"RocksDBTable({self.name!r}, sid={self.sid})"


class RocksDBPartition(MutableMapping[Any, Any]):
    """One key group of one state name: cached entries over the backend's database.

    Iteration and ``len`` flush the cache and scan the key group's range
    (for tests and tools; operators use point reads and writes).

    Attributes:
        key_group: the key group.
        prefix: the database key prefix (key group and state id).
        young, old: the cached generations, user key -> value or ``ABSENT``.
        dirty: keys (young or old) whose cached value RocksDB does not hold yet.
    """

    __slots__ = ("_backend", "_cache", "dirty", "key_group", "old", "prefix", "young")

    def __init__(self, table: RocksDBTable, key_group: int) -> None:
        self._backend = table._backend
        self._cache: WriteBackCache = self._backend.cache
        self.key_group = key_group
        self.prefix = KG_SID.pack(key_group, table.sid)
        self.young: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}
        self.dirty: set[Any] = set()
        self._cache.partitions.append(self)

    def staged(self, key: Any, value: Any) -> tuple[bytes, bytes | None]:
        """Return the database write of ``key`` holding ``value`` (``None``: a delete)."""
        return self.prefix + encode(key), None if value is ABSENT else encode(value)

    def get(self, key: Any, default: Any = None) -> Any:
        v = self.young.get(key, MISS)
        if v is MISS:
            v = self._cache.load(self, key)
        elif type(v) not in IMMUTABLE and v is not ABSENT:
            # the caller may change it in place: write it back at the next flush
            self.dirty.add(key)
        return default if v is ABSENT else v

    def __getitem__(self, key: Any) -> Any:
        v = self.get(key, MISS)
        if v is MISS:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        young = self.young
        if key in young:
            young[key] = value
        else:
            self._cache.admit(self, key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        if self.get(key, MISS) is MISS:
            raise KeyError(key)
        self[key] = ABSENT

    def pop(self, key: Any, default: Any = MISS) -> Any:
        v = self.get(key, MISS)
        if v is MISS:
            if default is MISS:
                raise KeyError(key)
            return default
        self[key] = ABSENT
        return v

    def __contains__(self, key: object) -> bool:
        return self.get(key, MISS) is not MISS

    def __iter__(self) -> Iterator[Any]:
        backend = self._backend
        backend.flush()
        prefix = self.prefix
        end = prefix[:2] + (int.from_bytes(prefix[2:], "big") + 1).to_bytes(2, "big")
        keys = [
            decode(k[len(prefix) :], allow_pickle=True)
            for k, _ in backend._range_items(prefix, end)
        ]
        return iter(keys)

    def __len__(self) -> int:
        return sum(1 for _ in self)
