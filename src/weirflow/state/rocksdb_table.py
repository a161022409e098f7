"""Tables of the RocksDB keyed backend and the write-back cache in front of the database.

A :class:`RocksDBTable` is one declared state name; its :class:`RocksDBPartition`
(one per key group) is what operators read and write per record. Each
partition caches entries in two plain dicts keyed by the user key, so a read
of a cached key is one dict lookup: no key encoding, no RocksDB call.

The cache (:class:`WriteBackCache`) is bounded by generations instead of an
exact LRU list, which would cost a reordering on every hit. Entries loaded
or written since the last write-back are *young*; every young entry counts
as dirty except those only read while holding an immutable value (a
mutable one, a list or dict or user object, may be changed in place by the
caller). *Old* entries are clean. A read that finds an entry old moves it
to young. The young entries reach RocksDB in one write batch at every
snapshot (:meth:`WriteBackCache.flush`, after which they join the old ones
if together they fit in half the capacity) and when all partitions together
hold half the capacity young (:meth:`WriteBackCache.rotate`, which drops the
old ones and makes the young ones old). A key used at least once per
generation therefore stays cached, and at most ``capacity`` entries are held.
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

        The entry becomes young, and dirty when its value is mutable (see the module).
        """
        v = part.old.get(key, MISS)
        stored = True
        if v is MISS:
            raw = self._get(part.prefix + encode(key))
            stored = raw is not None
            v = decode(raw, allow_pickle=True) if stored else ABSENT
        self.admit(part, key, v)
        if v is ABSENT or type(v) in IMMUTABLE:
            part.clean.add(key)
        if not stored:
            part.fresh.add(key)
        return v

    def admit(self, part: RocksDBPartition, key: Any, value: Any) -> None:
        """Put ``key`` (absent from ``part.young``) into the young generation."""
        if self.young >= self.capacity // 2:
            # before the entry goes in: the caller may change a value it just read in place
            self.rotate()
        part.old.pop(key, None)
        part.young[key] = value
        self.young += 1

    def _write_young(self) -> None:
        batch: list[tuple[bytes, bytes | None]] = []
        for part in self.partitions:
            clean = part.clean
            for key, value in part.young.items():
                if key not in clean:
                    batch.append(part.staged(key, value))
            clean.clear()
            part.fresh.clear()
        if batch:
            self._write(batch)

    def rotate(self) -> None:
        """Write the young generation back; drop the old one; young becomes old."""
        self._write_young()
        for part in self.partitions:
            part.old, part.young = part.young, {}
        self.young = 0

    def flush(self) -> None:
        """Write the young generation back; it joins the old one if both fit half the capacity."""
        held = sum(len(part.old) + len(part.young) for part in self.partitions)
        if held > self.capacity // 2:
            self.rotate()
            return
        self._write_young()
        for part in self.partitions:
            if part.young:
                part.old.update(part.young)
                part.young = {}
        self.young = 0

    def clear(self) -> None:
        """Drop every cached entry, dirty ones included (the database is replaced or closed)."""
        for part in self.partitions:
            part.young, part.old = {}, {}
            part.clean.clear()
            part.fresh.clear()
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
        clean: young keys only read, holding an immutable value (not written back).
        fresh: young keys RocksDB does not hold (read as absent, not written back since):
            deleting one just forgets it, so a window that opens and closes between two
            write-backs never reaches RocksDB.
    """

    __slots__ = ("_backend", "_cache", "clean", "fresh", "key_group", "old", "prefix", "young")

    def __init__(self, table: RocksDBTable, key_group: int) -> None:
        self._backend = table._backend
        self._cache: WriteBackCache = self._backend.cache
        self.key_group = key_group
        self.prefix = KG_SID.pack(key_group, table.sid)
        self.young: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}
        self.clean: set[Any] = set()
        self.fresh: set[Any] = set()
        self._cache.partitions.append(self)

    def staged(self, key: Any, value: Any) -> tuple[bytes, bytes | None]:
        """Return the database write of ``key`` holding ``value`` (``None``: a delete)."""
        return self.prefix + encode(key), None if value is ABSENT else encode(value)

    def get(self, key: Any, default: Any = None) -> Any:
        v = self.young.get(key, MISS)
        if v is MISS:
            v = self._cache.load(self, key)
        return default if v is ABSENT else v

    def __getitem__(self, key: Any) -> Any:
        v = self.get(key, MISS)
        if v is MISS:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        young = self.young
        if key in young:
            if value is ABSENT and key in self.fresh:
                del young[key]
                self.fresh.discard(key)
                self.clean.discard(key)
                self._cache.young -= 1
                return
            young[key] = value
            if self.clean:
                self.clean.discard(key)
        else:
            self._cache.admit(self, key, value)

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
