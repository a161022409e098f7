"""Whether state values restore into changed classes, judged from recorded schemas alone.

A checkpoint's manifest records, for a stateful operator whose state values
have a declared class (a ``msgspec.Struct`` or dataclass), that class's
:class:`SchemaRecord`: its name, schema version, field types, the fields
without a default and its migration steps. ``weirflow upgrade-check`` and the
restore compare the recorded one with the new code's class by the rules
:func:`weirflow.serde.schema.rebuild` applies to each value, without decoding
any state (which may hold pickles).
"""

from __future__ import annotations

import dataclasses

import msgspec

from weirflow.serde.schema import field_types, schema_of


class SchemaRecord(msgspec.Struct, frozen=True):
    """What a manifest records of a state value class.

    Attributes:
        name: the class's qualified name.
        version: its schema version (:class:`~weirflow.serde.schema.StateSchema`).
        fields: field name → declared type (text).
        required: fields without a default.
        migrations: ``(from_version, to_version)`` of each :class:`StateMigration`.
    """

    name: str
    version: int
    fields: dict[str, str]
    required: list[str]
    migrations: list[tuple[int, int]]


def _required(cls: type) -> list[str]:
    if issubclass(cls, msgspec.Struct):
        return [f.name for f in msgspec.structs.fields(cls) if f.required]
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]


def schema_record(cls: object) -> str | None:
    """The :class:`SchemaRecord` of ``cls`` as JSON text, ``None`` unless it is a Struct or
    dataclass class (other values carry no schema)."""
    if not isinstance(cls, type) or not (
        issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)
    ):
        return None
    schema = schema_of(cls)
    record = SchemaRecord(
        cls.__qualname__,
        schema.version,
        field_types(cls),
        _required(cls),
        sorted((m.from_version, m.to_version) for m in schema.migrations.values()),
    )
    return msgspec.json.encode(record).decode()


def schema_changes(recorded: str | None, now: str | None) -> list[str]:
    """The changes from the recorded class to the new one that refuse a restore.

    Args:
        recorded: the manifest's :func:`schema_record` text, or ``None``.
        now: the new code's, or ``None``.

    Returns:
        One line per refused change, naming the class, the field and the fix;
        empty when the restore would rebuild every value, or when either side
        records nothing or the classes differ (nothing to compare).
    """
    if recorded is None or now is None:
        return []
    old = msgspec.json.decode(recorded, type=SchemaRecord)
    new = msgspec.json.decode(now, type=SchemaRecord)
    if old.name != new.name:
        return []
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
                    f"StateMigration from {version}: add one to its __weirflow_schema__"
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
    return changes
