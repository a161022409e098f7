"""Recorded state value schemas compared without any state: the rules the restore applies."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from weirflow.serde.schema import StateMigration, StateSchema
from weirflow.serde.schema_check import schema_changes, schema_record


def _same(fields: dict[str, object]) -> dict[str, object]:
    return fields


def _struct(version: int, steps: list[tuple[int, int]], **fields: type) -> type:
    """A Struct ``Cart`` with ``fields``, at schema ``version`` with migration ``steps``."""
    cls = msgspec.defstruct("Cart", list(fields.items()))
    migrations = [StateMigration(a, b, _same) for a, b in steps]
    cls.__weirflow_schema__ = StateSchema(version, migrations)  # type: ignore[attr-defined]
    return cls


V1 = _struct(1, [], items=int, total=int)

CASES = [
    # (case, new class, text of the refusal or None)
    ("unchanged", V1, None),
    ("field removed", _struct(1, [], items=int), None),
    ("type changed", _struct(1, [], items=int, total=float), "'total' changed type int -> float"),
    ("field without a default", _struct(1, [], items=int, total=int, coupon=str),
     "'coupon' added without a default"),
    ("version raised with a migration chain", _struct(3, [(1, 2), (2, 3)], items=str), None),
    ("version raised, chain broken", _struct(3, [(2, 3)], items=int, total=int),
     "without a StateMigration from 1"),
    ("version lowered", None, "schema version lowered 2 -> 1"),
]  # fmt: skip


@pytest.mark.parametrize(("new", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_changes(new: type | None, refusal: str | None) -> None:
    old, now = (_struct(2, [(1, 2)], items=int, total=int), V1) if new is None else (V1, new)
    changes = schema_changes(schema_record(old), schema_record(now))
    if refusal is None:
        assert changes == []
    else:
        (change,) = changes
        assert refusal in change and "state value class Cart" in change


@pytest.mark.parametrize(("default", "refused"), [(True, False), (False, True)])
def test_a_dataclass_gaining_a_field(default: bool, refused: bool) -> None:
    coupon = ("coupon", str, dataclasses.field(default="")) if default else ("coupon", str)
    cart = dataclasses.make_dataclass("Cart", [("items", int), ("total", int), coupon])
    assert bool(schema_changes(schema_record(V1), schema_record(cart))) is refused


def test_values_without_a_schema_are_not_compared() -> None:
    assert schema_record(int) is None and schema_record(None) is None
    assert schema_changes(None, schema_record(V1)) == []


def _key(**fields: type) -> type:
    """A frozen (hashable) Struct ``Sku`` with ``fields``: a class map keys may have."""
    return msgspec.defstruct("Sku", list(fields.items()), frozen=True)


@pytest.mark.parametrize(
    ("new", "refusal"),
    [
        (_key(code=str, shelf=int, aisle=int), "'aisle' added without a default"),
        (_key(code=str), "field 'shelf' removed from a hashable class"),
    ],
    ids=["field without a default", "field removed"],
)
def test_a_hashable_class_loses_no_field(new: type, refusal: str) -> None:
    """Removing a field of a class whose values may be map keys would merge keys."""
    (change,) = schema_changes(schema_record(_key(code=str, shelf=int)), schema_record(new))
    assert refusal in change and "state value class Sku" in change


def test_a_hashable_class_may_gain_a_field_with_a_default() -> None:
    aisle = msgspec.defstruct(
        "Sku", [("code", str), ("shelf", int), ("aisle", int, 0)], frozen=True
    )
    assert schema_changes(schema_record(_key(code=str, shelf=int)), schema_record(aisle)) == []


def test_a_record_without_hashable_reads_as_not_hashable() -> None:
    """A manifest written before ``hashable`` was recorded decodes, and a removed field of a
    class that is not hashable now is allowed, as before."""
    old = '{"name":"Cart","version":1,"fields":{"a":"int","b":"int"},"required":[],"migrations":[]}'
    assert schema_changes(old, schema_record(_struct(1, [], a=int))) == []
