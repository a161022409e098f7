"""State schema evolution for ``msgspec.Struct`` and dataclass values.

A Struct or dataclass value in state is written with its class (module and
qualified name), its *schema version* and its fields by name, never by
position. On restore the value is rebuilt as an instance of the class the
job defines now:

1. when the written version is older than the class's, the class's
   :class:`StateMigration` functions run in order on the fields (a dict),
   ``from_version -> to_version``, until the current version is reached;
2. fields the class no longer has are dropped; fields it gained take their
   defaults;
3. a field without a value and without a default, or (without a migration)
   a field whose declared type changed, refuses the restore with a
   :class:`StateSchemaError` naming the class, the field and the fix;
4. so does (without a migration) a field removed from a *hashable* class
   (a frozen Struct or dataclass): such values may be map keys or set
   members, and two keys that differed only in the removed field would
   become one, silently merging their state.

The state descriptor that holds the values declares their version and
migrations (the class is the descriptor's ``value_type``)::

    CART = ValueStateDescriptor(
        "cart", value_type=Cart, schema=StateSchema(2, [StateMigration(1, 2, add_total)])
    )

or the class declares them itself, with a class attribute::

    class Cart(msgspec.Struct):
        items: int
        total_cents: int = 0
        __weirflow_schema__ = StateSchema(2, [StateMigration(1, 2, add_total)])

Both end in :func:`schema_of`, the one place the rules read a class's
schema from; a descriptor and the class may not declare different ones.
Without either the version is 1. The rules follow Avro's schema resolution as
Flink's POJO and Avro serializers apply it (fields matched by name, new
fields need a default, removed fields are skipped) and Kafka Streams' advice
to version state explicitly; a type change needs a migration, as in Flink.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from weirflow.errors import SerdeError

_ATTRIBUTE = "__weirflow_schema__"


class StateSchemaError(SerdeError):
    """A state value cannot be rebuilt as the class the job defines now."""

    retriable = False


@dataclass(frozen=True)
class StateMigration:
    """Turns the fields of a state value of ``from_version`` into those of ``to_version``.

    Attributes:
        from_version: the schema version it reads.
        to_version: the version it writes (greater than ``from_version``).
        fn: ``fields -> fields``, both dicts of field name to value.
    """

    from_version: int
    to_version: int
    fn: Callable[[dict[str, Any]], dict[str, Any]]

    def __post_init__(self) -> None:
        if not 1 <= self.from_version < self.to_version:
            raise SerdeError(
                f"StateMigration({self.from_version}, {self.to_version}) must go from a "
                "version >= 1 to a greater one"
            )


class StateSchema:
    """A class's schema version and the migrations from its older versions.

    Args:
        version: the current schema version (>= 1).
        migrations: :class:`StateMigration` steps; together they must lead
            from each older version that was written to ``version``.

    Raises:
        SerdeError: a version below 1, or a migration past ``version``.
    """

    def __init__(self, version: int, migrations: Iterable[StateMigration] = ()) -> None:
        if type(version) is not int or version < 1:
            raise SerdeError(f"StateSchema version must be an int >= 1, got {version!r}")
        self.version = version
        self.migrations = {m.from_version: m for m in migrations}
        beyond = [m for m in self.migrations.values() if m.to_version > version]
        if beyond:
            raise SerdeError(
                f"StateMigration to version {beyond[0].to_version} is past the schema "
                f"version {version}"
            )

    def steps(self) -> list[tuple[int, int]]:
        """``(from_version, to_version)`` of each migration, sorted."""
        return sorted((m.from_version, m.to_version) for m in self.migrations.values())


# schemas that state descriptors declare for their value classes; weak, so that a job module
# loaded again (a new class object) starts afresh
_DECLARED: weakref.WeakKeyDictionary[type, StateSchema] = weakref.WeakKeyDictionary()


def _own_schema(cls: type) -> StateSchema | None:
    declared = getattr(cls, _ATTRIBUTE, None)
    return declared if isinstance(declared, StateSchema) else None


def declare_schema(cls: type, schema: StateSchema) -> None:
    """Record the schema a state descriptor declares for its value class ``cls``.

    Values are rebuilt by class (a pickle names no descriptor), so every
    declaration of a class must agree: the same version and migration steps.

    Args:
        cls: a ``msgspec.Struct`` or dataclass class.
        schema: its schema.

    Raises:
        SerdeError: ``cls`` is not a Struct or dataclass class, or it already
            has another schema (its ``__weirflow_schema__`` or another descriptor's).
    """
    if not isinstance(cls, type) or not (
        issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)
    ):
        raise SerdeError(
            f"a state schema applies to a msgspec.Struct or dataclass value class, not {cls!r}"
        )
    known = _DECLARED.get(cls) or _own_schema(cls)
    if known is not None and (known.version, known.steps()) != (schema.version, schema.steps()):
        raise SerdeError(
            f"{cls.__qualname__} is declared with schema version {known.version} "
            f"{known.steps()} and version {schema.version} {schema.steps()}: state values are "
            "rebuilt by class, so declare one schema per class"
        )
    _DECLARED[cls] = schema


def schema_of(cls: type) -> StateSchema:
    """The :class:`StateSchema` a descriptor or the class declares, else version 1 without
    migrations."""
    return _DECLARED.get(cls) or _own_schema(cls) or StateSchema(1)


def _fields_of(value: Any) -> dict[str, Any] | None:
    if isinstance(value, msgspec.Struct):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        if any(not f.init for f in fields):
            return None  # fields the constructor does not take: pickled as they are
        return {f.name: getattr(value, f.name) for f in fields}
    return None


def is_hashable_class(cls: type) -> bool:
    """Whether instances of the Struct or dataclass ``cls`` hash by value (a frozen Struct; a
    dataclass with a generated ``__hash__``), so that they may be map keys or set members."""
    if issubclass(cls, msgspec.Struct):
        return bool(cls.__struct_config__.frozen)
    return cls.__hash__ is not None and cls.__hash__ is not object.__hash__


def _type_text(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


@functools.cache
def field_types(cls: type) -> dict[str, str]:
    """The declared type of each field of a Struct or dataclass, as text (one dict per class,
    so that pickle stores it once per encoded value tree)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    if issubclass(cls, msgspec.Struct):
        names: Iterable[str] = cls.__struct_fields__
    else:
        names = [f.name for f in dataclasses.fields(cls) if f.init]
    return {name: _type_text(hints.get(name, Any)) for name in names}


def reduce_versioned(value: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """Pickle reduction of a Struct or dataclass value by field name and schema version.

    Returns:
        ``(rebuild, args)`` for :meth:`pickle.Pickler.reducer_override`, or
        ``None`` for other values (pickled as usual).
    """
    fields = _fields_of(value)
    if fields is None:
        return None
    cls = type(value)
    version = schema_of(cls).version
    return rebuild, (cls.__module__, cls.__qualname__, version, fields, field_types(cls))


def _find_class(module: str, qualname: str) -> type:
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as e:
        raise StateSchemaError(
            f"state holds values of class {module}.{qualname}, which this job no longer "
            "defines: keep the class, or migrate the state"
        ) from e
    return found


def rebuild(
    module: str, qualname: str, version: int, fields: dict[str, Any], types: dict[str, str]
) -> Any:
    """Rebuild a value written by :func:`reduce_versioned` as the class defined now.

    Args:
        module: the class's module.
        qualname: the class's qualified name.
        version: the schema version the value was written with.
        fields: field name → value.
        types: field name → its declared type when written (text).

    Raises:
        StateSchemaError: written by a newer schema version; no migration
            path; a field without value or default; a field whose declared
            type changed, or a field removed from a hashable class, without a
            migration.
    """
    cls = _find_class(module, qualname)
    schema = schema_of(cls)
    if version > schema.version:
        raise StateSchemaError(
            f"state of {qualname} was written with schema version {version}, the class is at "
            f"{schema.version}: restore it with the job version that wrote it"
        )
    migrated = version < schema.version
    while version < schema.version:
        step = schema.migrations.get(version)
        if step is None:
            raise StateSchemaError(
                f"state of {qualname} has schema version {version} and the class version "
                f"{schema.version}, with no StateMigration from {version}: add one to the "
                "schema of its state descriptor or class"
            )
        fields = step.fn(dict(fields))
        version = step.to_version
    now = field_types(cls)
    if not migrated:
        changed = [f for f in fields if f in now and f in types and types[f] != now[f]]
        if changed:
            f = changed[0]
            raise StateSchemaError(
                f"state of {qualname}: field {f!r} changed type {types[f]} -> {now[f]} in the "
                "same schema version: raise the version with a StateMigration that converts it"
            )
        removed = sorted(f for f in fields if f not in now)
        if removed and is_hashable_class(cls):
            raise StateSchemaError(
                f"state of {qualname}: field {removed[0]!r} removed from a hashable class in the "
                "same schema version: its values may be map keys or set members, and keys that "
                "differed only in that field would merge; raise the version with a "
                "StateMigration that drops it, if merging is meant"
            )
    try:
        return cls(**{k: v for k, v in fields.items() if k in now})
    except TypeError as e:
        raise StateSchemaError(
            f"state of {qualname} (schema version {version}) does not fit the class: {e}; "
            "give a new field a default, or raise the schema version with a StateMigration"
        ) from e
