"""The part every keyed state backend shares: key-group bounds, the current key, declared names."""

from __future__ import annotations

from typing import Any, overload

from weirflow.errors import ConfigError, StateError
from weirflow.state.context import KeyContext
from weirflow.state.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from weirflow.state.keygroups import DEFAULT_MAX_PARALLELISM, KeyGroupRange, key_group_for_key
from weirflow.state.primitives import ListState, MapState, ValueState
from weirflow.state.table import StateTable


class KeyedBackendBase:
    """What every keyed state backend shares: key groups, the current key, declared names.

    Subclasses create the tables (``_new_table``) and implement snapshot,
    restore and ``is_empty``.

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
        self._tables: dict[str, Any] = {}

    def _new_table(self, name: str) -> StateTable:
        raise NotImplementedError  # abstract

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

    def _declare(self, name: str, kind: StateKind) -> StateTable:
        known = self._kinds.get(name)
        if known is not None and known != kind:
            raise StateError(f"state {name!r} is declared as {known} state, not as {kind} state")
        table = self._tables.get(name)
        if table is None:
            # a name a restored database brought has its kind but no table yet
            self._kinds[name] = kind
            table = self._tables[name] = self._new_table(name)
        return table

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

    def table(self, name: str) -> StateTable:
        """Declare a raw table (or look it up).

        Args:
            name: state name; shares the namespace with descriptor states.

        Returns:
            The table (:class:`KeyedTable` or the backend's own).

        Raises:
            StateError: the name is already declared as a value, list or map state.
        """
        return self._declare(name, "table")

    def state_kinds(self) -> dict[str, StateKind]:
        """Return every declared (or restored) state name and its kind."""
        return dict(self._kinds)
