"""Keyed state objects bound to a backend's current key.

Each object stands for one declared state name and reads the current key on
every call, as in Flink's keyed state API: an operator fetches it once and
uses it for every record. ``ListState`` and ``MapState`` mutate their
containers in place (cheap appends and puts); the backend's snapshot copies
those containers, so later updates never reach a snapshot already taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from weirflow.state.context import KeyContext
from weirflow.state.table import StateTable


class ValueState:
    """A single value per key.

    Args:
        table: the backing table.
        context: the backend's current key.
        default: returned when the key holds no value.
    """

    __slots__ = ("_ctx", "_default", "_table")

    def __init__(self, table: StateTable, context: KeyContext, default: Any = None) -> None:
        self._table = table
        self._ctx = context
        self._default = default

    def value(self) -> Any:
        """Return the current key's value, or the descriptor's default.

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"value state {self._table.name!r}")
        return self._table.get(kg, key, self._default)

    def update(self, value: Any) -> None:
        """Set the current key's value; ``None`` clears it (as in Flink).

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"value state {self._table.name!r}")
        if value is None:
            self._table.remove(kg, key)
        else:
            self._table.partition(kg)[key] = value

    def clear(self) -> None:
        """Remove the current key's value.

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"value state {self._table.name!r}")
        self._table.remove(kg, key)


class ListState:
    """A list of values per key; an empty list is the same as no state.

    Args:
        table: the backing table (key -> ``list``).
        context: the backend's current key.
    """

    __slots__ = ("_ctx", "_table")

    def __init__(self, table: StateTable, context: KeyContext) -> None:
        self._table = table
        self._ctx = context

    def _where(self) -> tuple[int, Any]:
        return self._ctx.require(f"list state {self._table.name!r}")

    def get(self) -> list[Any]:
        """Return a copy of the current key's list (``[]`` when empty).

        Raises:
            StateError: no current key.
        """
        kg, key = self._where()
        stored = self._table.get(kg, key)
        return [] if stored is None else list(stored)

    def add(self, value: Any) -> None:
        """Append one value to the current key's list.

        Raises:
            StateError: no current key.
        """
        kg, key = self._where()
        part = self._table.partition(kg)
        stored = part.get(key)
        if stored is None:
            part[key] = [value]
        else:
            stored.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        """Append every value of ``values`` to the current key's list.

        Raises:
            StateError: no current key.
        """
        kg, key = self._where()
        extra = list(values)
        if not extra:
            return
        part = self._table.partition(kg)
        stored = part.get(key)
        if stored is None:
            part[key] = extra
        else:
            stored.extend(extra)

    def update(self, values: Iterable[Any]) -> None:
        """Replace the current key's list by ``values`` (an empty iterable clears it).

        Raises:
            StateError: no current key.
        """
        kg, key = self._where()
        new = list(values)
        if new:
            self._table.partition(kg)[key] = new
        else:
            self._table.remove(kg, key)

    def clear(self) -> None:
        """Remove the current key's list.

        Raises:
            StateError: no current key.
        """
        kg, key = self._where()
        self._table.remove(kg, key)


class MapState:
    """A map (user key -> value) per key; an empty map is the same as no state.

    Args:
        table: the backing table (key -> ``dict``).
        context: the backend's current key.
    """

    __slots__ = ("_ctx", "_table")

    def __init__(self, table: StateTable, context: KeyContext) -> None:
        self._table = table
        self._ctx = context

    def _stored(self) -> dict[Any, Any] | None:
        kg, key = self._ctx.require(f"map state {self._table.name!r}")
        return self._table.get(kg, key)

    def get(self, user_key: Any, default: Any = None) -> Any:
        """Return the value of ``user_key`` for the current key, or ``default``.

        Raises:
            StateError: no current key.
        """
        stored = self._stored()
        return default if stored is None else stored.get(user_key, default)

    def put(self, user_key: Any, value: Any) -> None:
        """Set ``user_key`` to ``value`` for the current key.

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"map state {self._table.name!r}")
        part = self._table.partition(kg)
        stored = part.get(key)
        if stored is None:
            part[key] = {user_key: value}
        else:
            stored[user_key] = value

    def contains(self, user_key: Any) -> bool:
        """Return whether the current key's map holds ``user_key``.

        Raises:
            StateError: no current key.
        """
        stored = self._stored()
        return stored is not None and user_key in stored

    def remove(self, user_key: Any) -> None:
        """Delete ``user_key`` from the current key's map; absent keys are ignored.

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"map state {self._table.name!r}")
        stored = self._table.get(kg, key)
        if stored is None:
            return
        stored.pop(user_key, None)
        if not stored:
            # An empty map is dropped so that empty state never reaches a snapshot.
            self._table.remove(kg, key)

    def items(self) -> list[tuple[Any, Any]]:
        """Return the current key's ``(user_key, value)`` pairs, in insertion order (a copy).

        Raises:
            StateError: no current key.
        """
        stored = self._stored()
        return [] if stored is None else list(stored.items())

    def keys(self) -> list[Any]:
        """Return the current key's user keys, in insertion order (a copy).

        Raises:
            StateError: no current key.
        """
        stored = self._stored()
        return [] if stored is None else list(stored)

    def values(self) -> list[Any]:
        """Return the current key's values, in insertion order (a copy).

        Raises:
            StateError: no current key.
        """
        stored = self._stored()
        return [] if stored is None else list(stored.values())

    def is_empty(self) -> bool:
        """Return whether the current key's map holds nothing.

        Raises:
            StateError: no current key.
        """
        return not self._stored()

    def clear(self) -> None:
        """Remove the current key's whole map.

        Raises:
            StateError: no current key.
        """
        kg, key = self._ctx.require(f"map state {self._table.name!r}")
        self._table.remove(kg, key)
