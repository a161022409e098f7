"""Raw per-key-group storage of one declared state name.

A :class:`KeyedTable` is a dict of dicts: key group -> (key -> value). The
window and keyed-process operators read and write the inner dicts directly on
their hot path, which is why the table hands out live dicts instead of
wrapping every access.

Snapshot contract: :meth:`MemoryKeyedStateBackend.snapshot` copies each inner dict
(one level). A value stored in a table must therefore be replaced, not mutated
in place, once a snapshot may hold it: ``part[key] = count + 1`` is right,
``part[key].append(x)`` on a list a snapshot still references is not.
The bound ``ListState`` and ``MapState`` follow this rule for you (their
containers are copied at snapshot time).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

from weirflow.errors import StateError
from weirflow.state.keygroups import KeyGroupRange


def check_key_group(name: str, key_group: int, key_group_range: KeyGroupRange) -> None:
    """Refuse a partition outside the backend's range.

    Raises:
        StateError: ``key_group`` is not in ``key_group_range`` (names the state).
    """
    if key_group not in key_group_range:
        raise StateError(
            f"state {name!r}: key group {key_group} is outside this backend's "
            f"range {key_group_range}"
        )


class StateTable(Protocol):
    """Per-key-group storage of one state name, as operators and bound states use it.

    ``partition`` returns a mapping the caller reads and writes directly on
    its hot path: a dict for the memory backend, a view over a write-back
    cache for RocksDB. A value read from a partition may be mutated in place
    and the change is kept (both backends treat a read mutable value as
    written).
    """

    name: str

    def partition(self, key_group: int) -> MutableMapping[Any, Any]:
        """Return the mapping of ``key_group`` (StateError outside the range)."""
        ...

    def get(self, key_group: int, key: Any, default: Any = None) -> Any:
        """Return the value of ``key`` in ``key_group``, or ``default``."""
        ...

    def put(self, key_group: int, key: Any, value: Any) -> None:
        """Set the value of ``key`` in ``key_group`` (StateError outside the range)."""
        ...

    def remove(self, key_group: int, key: Any) -> None:
        """Delete ``key`` from ``key_group``; absent keys are ignored."""
        ...


class KeyedTable:
    """Per-key-group dicts for one state name.

    Args:
        name: the state name (for messages).
        key_group_range: key groups this table may hold; a partition outside it
            is refused.
    """

    __slots__ = ("_parts", "_range", "name")

    def __init__(self, name: str, key_group_range: KeyGroupRange) -> None:
        self.name = name
        self._range = key_group_range
        self._parts: dict[int, dict[Any, Any]] = {}

    def partition(self, key_group: int) -> dict[Any, Any]:
        """Return the live dict of ``key_group``, creating it on first use.

        Args:
            key_group: a key group in this table's range.

        Returns:
            The dict (key -> value) the caller may read and write directly.

        Raises:
            StateError: the key group is outside the table's range.
        """
        part = self._parts.get(key_group)
        if part is None:
            check_key_group(self.name, key_group, self._range)
            part = self._parts[key_group] = {}
        return part

    def get(self, key_group: int, key: Any, default: Any = None) -> Any:
        """Return the value of ``key`` in ``key_group``, or ``default`` when absent."""
        part = self._parts.get(key_group)
        if part is None:
            return default
        return part.get(key, default)

    def put(self, key_group: int, key: Any, value: Any) -> None:
        """Set the value of ``key`` in ``key_group``.

        Raises:
            StateError: the key group is outside the table's range.
        """
        self.partition(key_group)[key] = value

    def remove(self, key_group: int, key: Any) -> None:
        """Delete ``key`` from ``key_group``; absent keys are ignored."""
        part = self._parts.get(key_group)
        if part is not None:
            part.pop(key, None)

    def items(self) -> Iterator[tuple[int, Any, Any]]:
        """Yield ``(key_group, key, value)`` for every entry, by key group then insertion."""
        for key_group in sorted(self._parts):
            for key, value in self._parts[key_group].items():
                yield key_group, key, value

    def key_groups(self) -> list[int]:
        """Return the key groups that hold at least one entry, ascending."""
        return sorted(kg for kg, part in self._parts.items() if part)

    def copy_partitions(self) -> dict[int, dict[Any, Any]]:
        """Return one-level copies of the non-empty partitions (a snapshot's synchronous part)."""
        return {kg: part.copy() for kg, part in self._parts.items() if part}

    def load_partition(self, key_group: int, entries: dict[Any, Any]) -> None:
        """Merge restored ``entries`` into ``key_group``'s partition.

        Raises:
            StateError: the key group is outside the table's range.
        """
        self.partition(key_group).update(entries)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts.values())

    def __repr__(self) -> str:
        return f"KeyedTable({self.name!r}, range={self._range}, entries={len(self)})"
