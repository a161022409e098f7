"""State descriptors: the declaration of one named piece of keyed state.

An operator declares every piece of state it uses by descriptor (or by raw
table name), so a snapshot covers exactly what was declared. A name has one
kind for the life of a backend; using it with another kind is an error.

A descriptor may name the class of its values (``value_type=``, a
``msgspec.Struct`` or dataclass) and their :class:`~weirflow.serde.StateSchema`
(``schema=``: the schema version and the migrations from older versions),
so that state written by an older job version restores into a changed class
(:mod:`weirflow.serde.schema`). Keep such a descriptor as an attribute of
the process function's class (or module): ``weirflow upgrade-check`` reads
the schemas of the descriptors it finds there. One built inside ``open`` is
checked only by the restore, when ``open`` declares it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from weirflow.errors import StateError
from weirflow.serde import StateSchema, declare_schema

StateKind = Literal["value", "list", "map", "table"]
"""The kind a state name is declared with; ``table`` is a raw :class:`KeyedTable`."""

STATE_KINDS: Final[frozenset[str]] = frozenset({"value", "list", "map", "table"})


@dataclass(frozen=True, slots=True)
class _Typed:
    """What every descriptor may say of its values: their class and its schema.

    Attributes:
        name: state name, unique within the backend.
        value_type: the class of the values (a ``msgspec.Struct`` or
            dataclass), needed with ``schema``.
        schema: the values' schema version and the migrations from older versions.

    Raises:
        StateError: a ``schema`` without ``value_type``.
        SerdeError: ``value_type`` is not a Struct or dataclass, or has another schema.
    """

    name: str
    value_type: type | None = field(default=None, kw_only=True)
    schema: StateSchema | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.schema is None:
            return
        if self.value_type is None:
            raise StateError(
                f"state {self.name!r} declares a schema without value_type=: name the Struct "
                "or dataclass class its values are"
            )
        declare_schema(self.value_type, self.schema)


@dataclass(frozen=True, slots=True)
class ValueStateDescriptor(_Typed):
    """Declares a single value per key (``value_type=`` and ``schema=`` as for every
    descriptor, see :class:`_Typed`).

    Attributes:
        default: returned by ``ValueState.value()`` when the key holds no value.
            It is returned as is, so it should be immutable.
    """

    default: Any = None

    @property
    def kind(self) -> StateKind:
        """Always ``"value"``."""
        return "value"


@dataclass(frozen=True, slots=True)
class ListStateDescriptor(_Typed):
    """Declares a list of values per key (``name``, ``value_type=``, ``schema=``:
    :class:`_Typed`)."""

    @property
    def kind(self) -> StateKind:
        """Always ``"list"``."""
        return "list"


@dataclass(frozen=True, slots=True)
class MapStateDescriptor(_Typed):
    """Declares a map (user key -> value) per key (``name``, ``value_type=``, ``schema=``:
    :class:`_Typed`).

    Attributes:
        key_type: the class of the map's user keys, when they are a
            ``msgspec.Struct`` or dataclass: its schema is recorded and checked
            like the values' (``weirflow upgrade-check``). Keys follow one more
            rule than values: a field may not be removed from a hashable key
            class without a migration, since keys that differed only in it
            would merge (:mod:`weirflow.serde.schema`).
    """

    key_type: type | None = field(default=None, kw_only=True)

    @property
    def kind(self) -> StateKind:
        """Always ``"map"``."""
        return "map"


StateDescriptor = ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor
"""Any of the three state descriptors."""
