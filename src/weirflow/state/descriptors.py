"""State descriptors: the declaration of one named piece of keyed state.

An operator declares every piece of state it uses by descriptor (or by raw
table name), so a snapshot covers exactly what was declared. A name has one
kind for the life of a backend; using it with another kind is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

StateKind = Literal["value", "list", "map", "table"]
"""The kind a state name is declared with; ``table`` is a raw :class:`KeyedTable`."""

STATE_KINDS: Final[frozenset[str]] = frozenset({"value", "list", "map", "table"})


@dataclass(frozen=True, slots=True)
class ValueStateDescriptor:
    """Declares a single value per key.

    Attributes:
        name: state name, unique within the backend.
        default: returned by ``ValueState.value()`` when the key holds no value.
            It is returned as is, so it should be immutable.
    """

    name: str
    default: Any = None

    @property
    def kind(self) -> StateKind:
        """Always ``"value"``."""
        return "value"


@dataclass(frozen=True, slots=True)
class ListStateDescriptor:
    """Declares a list of values per key.

    Attributes:
        name: state name, unique within the backend.
    """

    name: str

    @property
    def kind(self) -> StateKind:
        """Always ``"list"``."""
        return "list"


@dataclass(frozen=True, slots=True)
class MapStateDescriptor:
    """Declares a map (user key -> value) per key.

    Attributes:
        name: state name, unique within the backend.
    """

    name: str

    @property
    def kind(self) -> StateKind:
        """Always ``"map"``."""
        return "map"


StateDescriptor = ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor
"""Any of the three state descriptors."""
