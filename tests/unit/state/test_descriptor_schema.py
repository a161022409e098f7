"""A state descriptor declares its values' class and schema; one schema per class."""

from __future__ import annotations

import msgspec
import pytest

from weirflow import StateMigration, StateSchema
from weirflow.errors import SerdeError, StateError
from weirflow.serde.schema import reduce_versioned, schema_of
from weirflow.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor


def _identity(fields: dict) -> dict:
    return fields


def test_the_descriptors_schema_is_the_class_schema() -> None:
    class Cart(msgspec.Struct):
        items: int

    assert schema_of(Cart).version == 1
    ValueStateDescriptor("cart", value_type=Cart, schema=StateSchema(3, []))
    assert schema_of(Cart).version == 3
    written = reduce_versioned(Cart(2))
    assert written is not None and written[1][2] == 3, "values are written with version 3"


def test_descriptors_of_one_class_must_agree() -> None:
    class Line(msgspec.Struct):
        sku: str

    steps = [StateMigration(1, 2, _identity)]
    ListStateDescriptor("lines", value_type=Line, schema=StateSchema(2, steps))
    MapStateDescriptor("by_sku", value_type=Line, schema=StateSchema(2, steps))
    with pytest.raises(SerdeError, match="Line is declared with schema version 2"):
        ValueStateDescriptor("last", value_type=Line, schema=StateSchema(3))


def test_a_descriptor_cannot_contradict_the_class_attribute() -> None:
    class Own(msgspec.Struct):
        n: int
        __weirflow_schema__ = StateSchema(2, [StateMigration(1, 2, _identity)])

    ValueStateDescriptor("same", value_type=Own, schema=Own.__weirflow_schema__)
    with pytest.raises(SerdeError, match="declare one schema per class"):
        ValueStateDescriptor("other", value_type=Own, schema=StateSchema(1))


def test_a_schema_needs_a_struct_or_dataclass_value_type() -> None:
    with pytest.raises(StateError, match="without value_type="):
        ValueStateDescriptor("v", schema=StateSchema(2))
    with pytest.raises(SerdeError, match=r"msgspec\.Struct or dataclass"):
        ValueStateDescriptor("v", value_type=int, schema=StateSchema(2))
