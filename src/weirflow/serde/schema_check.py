"""Whether state values restore into changed classes, judged from recorded schemas alone.

A checkpoint's manifest records, for a stateful operator whose state values
have a declared class (a ``msgspec.Struct`` or dataclass), the
:class:`SchemaRecord` of that class and of every Struct or dataclass its
fields' declared types name, at any depth (``list[Item]``, ``dict[str, Item]``,
``Item | None``): its name, schema version, field types, the fields without
a default and its migration steps. ``weirflow upgrade-check`` and the
restore compare the recorded one with the new code's class by the rules
:func:`weirflow.serde.schema.rebuild` applies to each value, without decoding
any state (which may hold pickles).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from weirflow.serde.schema import field_types, is_hashable_class, schema_of


class SchemaRecord(msgspec.Struct, frozen=True):
    """What a manifest records of a state value class.

    Attributes:
        name: the class's qualified name.
        version: its schema version (:class:`~weirflow.serde.schema.StateSchema`).
        fields: field name → declared type (text).
        required: fields without a default.
        migrations: ``(from_version, to_version)`` of each :class:`StateMigration`.
        hashable: whether its values hash by value (may be map keys or set members);
            ``False`` in manifests written before it was recorded.
    """

    name: str
    version: int
    fields: dict[str, str]
    required: list[str]
    migrations: list[tuple[int, int]]
    hashable: bool = False


@runtime_checkable
class TypedState(Protocol):
    """A state declaration that names the class of its values (the state layer's descriptors).

    Attributes:
        name: the state's name.
        kind: what it holds per key (``value``, ``list``, ``map``).
        value_type: the class of its values, or ``None`` when undeclared.
    """

    name: str
    value_type: type | None

    @property
    def kind(self) -> str: ...


@runtime_checkable
class TypedKeys(Protocol):
    """A map state declaration that names the class of its user keys.

    Attributes:
        key_type: the class of the map's user keys, or ``None`` when undeclared.
    """

    key_type: type | None


StateRecord = dict[str, str | None]
"""What a checkpoint records of one declared state: ``kind`` (value, list, map) and ``schema``
(the :func:`schema_records` of its value class and, for a map, its key class, or ``None``)."""


def state_record(state: TypedState) -> StateRecord:
    """The :data:`StateRecord` of a state declaration (a descriptor)."""
    key = state.key_type if isinstance(state, TypedKeys) else None
    return {"kind": state.kind, "schema": schema_records([state.value_type, key])}


def state_changes(name: str, recorded: Mapping[str, str | None], now: StateRecord) -> list[str]:
    """The changes from a recorded state to the new code's declaration of it that refuse a
    restore, one line each (empty: its values restore).

    Args:
        name: the state's name.
        recorded: its :data:`StateRecord` in the checkpoint.
        now: the new code's.

    Returns:
        ``"state descriptor 'cart' changed: value -> list"`` for a changed kind, else the
        :func:`schema_changes` of its classes.
    """
    if recorded.get("kind") != now["kind"]:
        return [f"state descriptor {name!r} changed: {recorded.get('kind')} -> {now['kind']}"]
    return schema_changes(recorded.get("schema"), now["schema"])


def _required(cls: type) -> list[str]:
    if issubclass(cls, msgspec.Struct):
        return [f.name for f in msgspec.structs.fields(cls) if f.required]
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _is_value_class(cls: object) -> bool:
    return isinstance(cls, type) and (
        issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)
    )


def _record(cls: type) -> SchemaRecord:
    schema = schema_of(cls)
    return SchemaRecord(
        cls.__qualname__,
        schema.version,
        field_types(cls),
        _required(cls),
        schema.steps(),
        is_hashable_class(cls),
    )


def schema_record(cls: object) -> str | None:
    """The :class:`SchemaRecord` of ``cls`` as JSON text, ``None`` unless it is a Struct or
    dataclass class (other values carry no schema)."""
    if not _is_value_class(cls):
        return None
    assert isinstance(cls, type)
    return msgspec.json.encode(_record(cls)).decode()


def _classes_in(tp: Any) -> Iterable[type]:
    """The Struct and dataclass classes a declared type names (``list[Item] | None``: Item)."""
    if _is_value_class(tp):
        yield tp
    for arg in typing.get_args(tp):
        yield from _classes_in(arg)


def value_classes(roots: Iterable[object]) -> list[type]:
    """``roots`` that are Struct or dataclass classes, and every such class their fields'
    declared types name, at any depth; each once, in the order found."""
    found: dict[type, None] = {}
    todo = [c for r in roots for c in _classes_in(r)]
    while todo:
        cls = todo.pop(0)
        if cls in found:
            continue
        found[cls] = None
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError):
            continue
        todo += [c for hint in hints.values() for c in _classes_in(hint)]
    return list(found)


def schema_records(roots: Iterable[object]) -> str | None:
    """The :class:`SchemaRecord` of each class :func:`value_classes` finds, as one JSON list
    (``None`` when it finds none)."""
    records = [_record(cls) for cls in value_classes(roots)]
    return msgspec.json.encode(records).decode() if records else None


def _decode(text: str) -> list[SchemaRecord]:
    # a manifest written before nested classes were recorded holds one record, not a list
    if text.lstrip().startswith("{"):
        return [msgspec.json.decode(text, type=SchemaRecord)]
    return msgspec.json.decode(text, type=list[SchemaRecord])


def schema_changes(recorded: str | None, now: str | None) -> list[str]:
    """The changes from the recorded classes to the new ones that refuse a restore.

    Args:
        recorded: the manifest's :func:`schema_records` (or :func:`schema_record`) text,
            or ``None``.
        now: the new code's, or ``None``.

    Returns:
        One line per refused change, naming the class, the field and the fix;
        empty when the restore would rebuild every value. A class is compared
        with the new class of the same name; a class only one side records
        is not compared.
    """
    if recorded is None or now is None:
        return []
    new = {r.name: r for r in _decode(now)}
    return [
        change
        for old in _decode(recorded)
        if old.name in new
        for change in _record_changes(old, new[old.name])
    ]


def key_class_change(recorded: str | None, now: str | None) -> str | None:
    """Whether the class of a stream's keys (``key_by``) changed in a way that moves its keys.

    A key's key group is the hash of its encoded bytes, and a Struct or
    dataclass key is encoded with its schema version and every field with its
    declared type: any such change places every restored key in another key
    group than the same key in the new code, so the state would silently not
    be found. Unlike values, keys take no migration.

    Args:
        recorded: the manifest's :func:`schema_record` of the key class, or ``None``.
        now: the new code's, or ``None``.

    Returns:
        One line naming the class and what changed, or ``None`` (unchanged, not
        a Struct or dataclass on either side, or classes of different names).
    """
    if recorded is None or now is None:
        return None
    old, new = _decode(recorded)[0], _decode(now)[0]
    if old.name != new.name or (old.version, old.fields) == (new.version, new.fields):
        # another class is another key type (compared by name); the same class unchanged
        return None
    return (
        f"key class {new.name} changed (schema version {old.version} -> {new.version}, fields "
        f"{old.fields} -> {new.fields}): keys are placed in key groups by the hash of their "
        "encoded fields, so no restored key would be found; keep the key class as it was"
    )


def _record_changes(old: SchemaRecord, new: SchemaRecord) -> list[str]:
    what = f"state value class {new.name}"
    if old.version > new.version:
        return [f"{what}: schema version lowered {old.version} -> {new.version}"]
    if old.version < new.version:
        steps = dict(new.migrations)
        version = old.version
        while version < new.version:
            if version not in steps:
                return [
                    f"{what}: schema version {old.version} -> {new.version} without a "
                    f"StateMigration from {version}: add one to the schema of its state "
                    "descriptor or class"
                ]
            version = steps[version]
        return []
    changes = [
        f"{what}: field {f!r} changed type {old.fields[f]} -> {t} in the same schema "
        "version: raise the version with a StateMigration that converts it"
        for f, t in new.fields.items()
        if f in old.fields and old.fields[f] != t
    ]
    changes += [
        f"{what}: field {f!r} added without a default: give it one, or raise the schema "
        "version with a StateMigration that sets it"
        for f in new.required
        if f not in old.fields
    ]
    if new.hashable:
        changes += [
            f"{what}: field {f!r} removed from a hashable class (its values may be map keys "
            "or set members: keys that differed only in it would merge): raise the schema "
            "version with a StateMigration that drops it, if merging is meant"
            for f in old.fields
            if f not in new.fields
        ]
    return changes
