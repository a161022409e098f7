"""The in-memory keyed state backend: per-key-group dicts on the heap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload

from weirflow.errors import ConfigError, StateError
from weirflow.state.blob import KEYED_STATE_MAGIC, pack_blob, unpack_blob
from weirflow.state.context import NO_KEY, KeyContext
from weirflow.state.descriptors import (
    STATE_KINDS,
    ListStateDescriptor,
    MapStateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from weirflow.state.errors import CorruptStateError
from weirflow.state.keygroups import DEFAULT_MAX_PARALLELISM, KeyGroupRange, key_group_for_key
from weirflow.state.primitives import ListState, MapState, ValueState
from weirflow.state.table import KeyedTable


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
        by_group: dict[int, dict[str, Any]] = {}
        for name, parts in self._partitions.items():
            kind = self._kinds[name]
            for kg, entries in parts.items():
                by_group.setdefault(kg, {})[name] = {"kind": kind, "entries": entries}
        return {
            kg: pack_blob(
                KEYED_STATE_MAGIC,
                kg,
                {"max_parallelism": self._max_parallelism, "states": by_group[kg]},
            )
            for kg in sorted(by_group)
        }


def _copy_partitions(kind: StateKind, table: KeyedTable) -> dict[int, dict[Any, Any]]:
    parts = table.copy_partitions()
    if kind == "list":
        return {kg: {k: list(v) for k, v in part.items()} for kg, part in parts.items()}
    if kind == "map":
        return {kg: {k: dict(v) for k, v in part.items()} for kg, part in parts.items()}
    return parts


class MemoryStateBackend:
    """Keyed state of one subtask held in dicts (implements ``KeyedStateBackend``).

    Args:
        key_group_range: the key groups this subtask owns.
        max_parallelism: the job's number of key groups.

    Raises:
        ConfigError: the range does not fit in ``[0, max_parallelism)``.
    """

    def __init__(
        self, key_group_range: KeyGroupRange, max_parallelism: int = DEFAULT_MAX_PARALLELISM
    ) -> None:
        if max_parallelism < 1 or key_group_range.end > max_parallelism:
            raise ConfigError(
                f"key-group range {key_group_range} does not fit max_parallelism {max_parallelism}"
            )
        self._range = key_group_range
        self._max_parallelism = max_parallelism
        self._ctx = KeyContext()
        self._kinds: dict[str, StateKind] = {}
        self._tables: dict[str, KeyedTable] = {}

    @property
    def key_group_range(self) -> KeyGroupRange:
        """The key groups this backend owns."""
        return self._range

    @property
    def max_parallelism(self) -> int:
        """The job's number of key groups."""
        return self._max_parallelism

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """Make ``key`` the key that bound state objects act on.

        Args:
            key: the key of the record or timer being processed.
            key_group: its key group if the caller already knows it (the
                partitioner computed it); computed from ``key`` when ``None``.

        Raises:
            StateError: the key's group is outside this backend's range (the
                record was routed to the wrong subtask).
        """
        if key_group is None:
            key_group = key_group_for_key(key, self._max_parallelism)
        if not self._range.start <= key_group < self._range.end:
            raise StateError(
                f"key {key!r} belongs to key group {key_group}, outside this backend's range "
                f"{self._range}; the record reached the wrong subtask"
            )
        ctx = self._ctx
        ctx.key = key
        ctx.key_group = key_group

    @property
    def current_key(self) -> Any:
        """The current key.

        Raises:
            StateError: no key has been set.
        """
        return self._ctx.require("the current key")[1]

    @property
    def current_key_group(self) -> int:
        """The current key's group.

        Raises:
            StateError: no key has been set.
        """
        return self._ctx.require("the current key group")[0]

    def _declare(self, name: str, kind: StateKind) -> KeyedTable:
        known = self._kinds.get(name)
        if known is None:
            self._kinds[name] = kind
            table = self._tables[name] = KeyedTable(name, self._range)
            return table
        if known != kind:
            raise StateError(f"state {name!r} is declared as {known} state, not as {kind} state")
        return self._tables[name]

    @overload
    def get_state(self, descriptor: ValueStateDescriptor) -> ValueState: ...
    @overload
    def get_state(self, descriptor: ListStateDescriptor) -> ListState: ...
    @overload
    def get_state(self, descriptor: MapStateDescriptor) -> MapState: ...
    def get_state(
        self, descriptor: ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor
    ) -> ValueState | ListState | MapState:
        """Declare a state (or look it up) and return it bound to the current key.

        A key need not be current yet; each call on the returned object needs
        one. Objects are cheap: fetch once, use for every record.

        Args:
            descriptor: the state's descriptor.

        Returns:
            :class:`ValueState`, :class:`ListState` or :class:`MapState`.

        Raises:
            StateError: the name is already declared with another kind.
        """
        table = self._declare(descriptor.name, descriptor.kind)
        if isinstance(descriptor, ValueStateDescriptor):
            return ValueState(table, self._ctx, descriptor.default)
        if isinstance(descriptor, ListStateDescriptor):
            return ListState(table, self._ctx)
        return MapState(table, self._ctx)

    def table(self, name: str) -> KeyedTable:
        """Declare a raw table (or look it up).

        Args:
            name: state name; shares the namespace with descriptor states.

        Returns:
            The :class:`KeyedTable`.

        Raises:
            StateError: the name is already declared as a value, list or map state.
        """
        return self._declare(name, "table")

    def state_kinds(self) -> dict[str, StateKind]:
        """Return every declared (or restored) state name and its kind."""
        return dict(self._kinds)

    def snapshot(self) -> MemoryKeyedStateSnapshot:
        """Take the synchronous part of a checkpoint.

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

    def _decode_own(
        self, blobs: Iterable[tuple[int, bytes]]
    ) -> list[tuple[int, dict[str, tuple[StateKind, dict[Any, Any]]]]]:
        seen: set[int] = set()
        held = {kg for table in self._tables.values() for kg in table.key_groups()}
        out = []
        for kg, blob in blobs:
            if kg not in self._range:
                continue
            if kg in seen or kg in held:
                raise StateError(f"key group {kg}: restored twice (two blobs, or state present)")
            seen.add(kg)
            out.append((kg, self._parse(kg, unpack_blob(KEYED_STATE_MAGIC, kg, blob))))
        for kg, states in out:
            for name, (kind, _) in states.items():
                known = self._kinds.get(name)
                if known is not None and known != kind:
                    raise StateError(
                        f"key group {kg}: state {name!r} was saved as {kind} state but is "
                        f"declared as {known} state"
                    )
        return out

    def _parse(self, kg: int, content: Any) -> dict[str, tuple[StateKind, dict[Any, Any]]]:
        try:
            max_p = content["max_parallelism"]
            states = content["states"]
            parsed = {name: (st["kind"], st["entries"]) for name, st in states.items()}
        except (TypeError, KeyError, AttributeError) as e:
            raise CorruptStateError(f"key group {kg}: malformed state blob content") from e
        if max_p != self._max_parallelism:
            raise StateError(
                f"key group {kg}: state was written with max_parallelism {max_p}, this job "
                f"uses {self._max_parallelism}; keys would land in other key groups"
            )
        for name, (kind, entries) in parsed.items():
            if kind not in STATE_KINDS or not isinstance(entries, dict):
                raise CorruptStateError(f"key group {kg}: malformed entries for state {name!r}")
        return parsed

    def is_empty(self) -> bool:
        """Return whether no state name holds any entry."""
        return all(len(table) == 0 for table in self._tables.values())

    def __repr__(self) -> str:
        key = self._ctx.key
        current = "none" if key is NO_KEY else repr(key)
        return (
            f"MemoryStateBackend(range={self._range}, max_parallelism={self._max_parallelism}, "
            f"states={sorted(self._kinds)}, current_key={current})"
        )
