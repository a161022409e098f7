"""The in-memory keyed state backend: per-key-group dicts on the heap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from weirflow.errors import StateError
from weirflow.state.backend import BackendScope, KeyedStateBackend
from weirflow.state.blob import (
    KeyedGroupState,
    check_restored_kinds,
    pack_keyed_state,
    unpack_keyed_state,
)
from weirflow.state.context import NO_KEY
from weirflow.state.descriptors import (
    StateKind,
)
from weirflow.state.keyed_base import KeyedBackendBase
from weirflow.state.table import KeyedTable
from weirflow.state.timers import TimerService


class MemoryKeyedStateSnapshot:
    """A memory backend's snapshot: one-level copies of every partition.

    Args:
        max_parallelism: the job's number of key groups, recorded in each blob.
        kinds: state name -> kind.
        partitions: state name -> key group -> (key -> value), already copied.
    """

    __slots__ = ("_kinds", "_max_parallelism", "_partitions")

    def __init__(
        self,
        max_parallelism: int,
        kinds: dict[str, StateKind],
        partitions: dict[str, dict[int, dict[Any, Any]]],
    ) -> None:
        self._max_parallelism = max_parallelism
        self._kinds = kinds
        self._partitions = partitions

    def key_groups(self) -> list[int]:
        """Return the non-empty key groups of the snapshot, ascending."""
        return sorted({kg for parts in self._partitions.values() for kg in parts})

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode one blob per non-empty key group.

        Returns:
            key group -> blob (see :mod:`weirflow.state.blob`), whose content is
            ``{"max_parallelism": int, "states": {name: {"kind": str, "entries": dict}}}``.

        Raises:
            SerdeError: a state value can be neither msgpack-encoded nor pickled.
        """
        by_group: dict[int, KeyedGroupState] = {}
        for name, parts in self._partitions.items():
            kind = self._kinds[name]
            for kg, entries in parts.items():
                by_group.setdefault(kg, {})[name] = (kind, entries)
        return {
            kg: pack_keyed_state(kg, self._max_parallelism, by_group[kg]) for kg in sorted(by_group)
        }


def _copy_partitions(kind: StateKind, table: KeyedTable) -> dict[int, dict[Any, Any]]:
    parts = table.copy_partitions()
    if kind == "list":
        return {kg: {k: list(v) for k, v in part.items()} for kg, part in parts.items()}
    if kind == "map":
        return {kg: {k: dict(v) for k, v in part.items()} for kg, part in parts.items()}
    return parts


class MemoryKeyedStateBackend(KeyedBackendBase):
    """Keyed state of one subtask held in dicts (implements ``KeyedStateBackend``).

    Args:
        key_group_range: the key groups this subtask owns.
        max_parallelism: the job's number of key groups.

    Raises:
        ConfigError: the range does not fit in ``[0, max_parallelism)``.
    """

    _tables: dict[str, KeyedTable]

    def _new_table(self, name: str) -> KeyedTable:
        return KeyedTable(name, self._range)

    def close(self) -> None:
        """Nothing to release: the dicts go with the object."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Nothing to do: every checkpoint holds all the state."""

    def snapshot(self, checkpoint_id: int | None = None) -> MemoryKeyedStateSnapshot:
        """Take the synchronous part of a checkpoint (``checkpoint_id`` is not needed here).

        Copies every partition one level deep (and list/map containers one
        level more), so updates made afterwards do not reach the snapshot.
        Cost: linear in the number of entries, done in C by ``dict.copy``.

        Returns:
            A :class:`MemoryKeyedStateSnapshot`.
        """
        partitions = {}
        for name, table in self._tables.items():
            parts = _copy_partitions(self._kinds[name], table)
            if parts:
                partitions[name] = parts
        return MemoryKeyedStateSnapshot(self._max_parallelism, dict(self._kinds), partitions)

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load state from blobs of one or many old subtasks.

        Steps:

        1. Skip blobs of key groups outside this backend's range (they belong
           to other subtasks after rescaling) without decoding them.
        2. Check and decode every remaining blob, before changing anything, so
           a bad blob leaves the backend as it was.
        3. Declare the restored names with their kinds and load the entries.

        Args:
            blobs: ``(key_group, blob)`` pairs from ``to_bytes_per_key_group``.

        Raises:
            UnsupportedStateVersionError: a blob has an unknown format version.
            CorruptStateError: a blob is corrupt or malformed.
            StateError: a key group appears twice or already holds state, the
                blob was written with another max_parallelism, or a restored
                name conflicts with a declared kind. Messages name the key group.
        """
        decoded = self._decode_own(blobs)
        for kg, states in decoded:
            for name, (kind, entries) in states.items():
                self._declare(name, kind).load_partition(kg, entries)

    def _decode_own(self, blobs: Iterable[tuple[int, bytes]]) -> list[tuple[int, KeyedGroupState]]:
        seen: set[int] = set()
        held = {kg for table in self._tables.values() for kg in table.key_groups()}
        out = []
        for kg, blob in blobs:
            if kg not in self._range:
                continue
            if kg in seen or kg in held:
                raise StateError(f"key group {kg}: restored twice (two blobs, or state present)")
            seen.add(kg)
            out.append((kg, unpack_keyed_state(kg, blob, self._max_parallelism)))
        for kg, states in out:
            check_restored_kinds(kg, states, self._kinds)
        return out

    def is_empty(self) -> bool:
        """Return whether no state name holds any entry."""
        return all(len(table) == 0 for table in self._tables.values())

    def __repr__(self) -> str:
        key = self._ctx.key
        current = "none" if key is NO_KEY else repr(key)
        return (
            f"MemoryKeyedStateBackend(range={self._range}, "
            f"max_parallelism={self._max_parallelism}, "
            f"states={sorted(self._kinds)}, current_key={current})"
        )


class MemoryStateBackend:
    """Keep keyed state and timers in dicts on the heap (the default ``StateBackend``).

    Fast while the state fits in memory; every checkpoint writes all of it.
    """

    def create_keyed_backend(self, scope: BackendScope) -> MemoryKeyedStateBackend:
        """Return an empty in-memory keyed backend for ``scope``."""
        return MemoryKeyedStateBackend(scope.key_group_range, scope.max_parallelism)

    def create_timer_service(self, scope: BackendScope, keyed: KeyedStateBackend) -> TimerService:
        """Return an empty heap timer service for ``scope``."""
        return TimerService(scope.key_group_range)

    def __repr__(self) -> str:
        return "MemoryStateBackend()"
