"""Unit tests of the keyed state backends (memory and RocksDB, each test on both): state
kinds, namespaces, errors, restore faults."""

import struct

import pytest

from state_backends import BackendFactory
from weirflow.errors import ConfigError, StateError, UnsupportedFormatVersionError
from weirflow.state import (
    CorruptStateError,
    KeyedStateBackend,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    MemoryKeyedStateBackend,
    RocksDBKeyedStateBackend,
    UnsupportedStateVersionError,
    ValueStateDescriptor,
    key_group_for_key,
)

FULL = KeyGroupRange(0, 128)


def backend_with_state(backends: BackendFactory) -> tuple[KeyedStateBackend, dict[int, bytes]]:
    backend = backends.keyed()
    value = backend.get_state(ValueStateDescriptor("count", default=0))
    for key in ["a", "b", "c"]:
        backend.set_current_key(key)
        value.update(value.value() + 1)
    return backend, backend.snapshot().to_bytes_per_key_group()


@pytest.mark.parametrize("cls", [MemoryKeyedStateBackend, RocksDBKeyedStateBackend])
def test_backends_have_every_protocol_member(cls: type) -> None:
    members = [name for name in vars(KeyedStateBackend) if not name.startswith("_")]
    assert {"snapshot", "restore", "get_state", "table", "set_current_key", "close"} <= set(members)
    for name in members:
        assert hasattr(cls, name), name


def test_value_state_default_update_and_clear(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(ValueStateDescriptor("v", default=7))
    backend.set_current_key("k")
    assert state.value() == 7
    state.update((1, "x"))
    assert state.value() == (1, "x")
    state.update(None)
    assert state.value() == 7
    state.update(3)
    state.clear()
    assert state.value() == 7
    assert backend.is_empty()


def test_list_state_get_returns_a_copy(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(ListStateDescriptor("l"))
    backend.set_current_key("k")
    state.add(1)
    state.add_all([2, 3])
    got = state.get()
    got.append(99)
    assert state.get() == [1, 2, 3]
    state.update([4])
    assert state.get() == [4]
    state.update([])
    assert state.get() == []
    assert backend.is_empty()


def test_map_state_operations_and_empty_map_is_dropped(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(MapStateDescriptor("m"))
    backend.set_current_key(("k", 1))
    assert state.is_empty()
    state.put("x", 1)
    state.put(("y",), [2])
    assert state.contains("x")
    assert not state.contains("z")
    assert state.get("z", "dflt") == "dflt"
    assert state.items() == [("x", 1), (("y",), [2])]
    assert state.keys() == ["x", ("y",)]
    assert state.values() == [1, [2]]
    state.remove("x")
    state.remove(("y",))
    state.remove("never-there")
    assert state.is_empty()
    assert backend.is_empty()


def test_states_are_scoped_by_current_key(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key("a")
    state.update(1)
    backend.set_current_key("b")
    assert state.value() is None
    state.update(2)
    backend.set_current_key("a")
    assert state.value() == 1
    assert backend.current_key == "a"
    assert backend.current_key_group == key_group_for_key("a", 128)


def test_raw_table_partitions_are_live_dicts() -> None:
    backend = MemoryKeyedStateBackend(KeyGroupRange(4, 8))
    table = backend.table("counts")
    part = table.partition(5)
    part["k"] = 1
    assert table.get(5, "k") == 1
    table.put(6, "j", 2)
    assert list(table.items()) == [(5, "k", 1), (6, "j", 2)]
    assert len(table) == 2
    table.remove(5, "k")
    assert table.get(5, "k", "gone") == "gone"
    assert backend.table("counts") is table


def test_no_current_key_raises_state_error(backends: BackendFactory) -> None:
    backend = backends.keyed()
    value = backend.get_state(ValueStateDescriptor("v"))
    lst = backend.get_state(ListStateDescriptor("l"))
    mp = backend.get_state(MapStateDescriptor("m"))
    for call in (value.value, lambda: value.update(1), lst.get, lambda: lst.add(1), mp.items):
        with pytest.raises(StateError, match="without a current key"):
            call()
    with pytest.raises(StateError):
        _ = backend.current_key
    with pytest.raises(StateError):
        _ = backend.current_key_group


def test_none_is_a_valid_key(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key(None)
    state.update(1)
    assert backend.current_key is None
    assert state.value() == 1


def test_key_outside_range_raises_state_error(backends: BackendFactory) -> None:
    kg = key_group_for_key("a", 128)
    backend = backends.keyed(KeyGroupRange(kg + 1, 128) if kg < 127 else KeyGroupRange(0, kg))
    with pytest.raises(StateError, match=f"key group {kg}"):
        backend.set_current_key("a")
    with pytest.raises(StateError, match="outside"):
        backend.set_current_key("a", key_group=kg)
    with pytest.raises(StateError, match="outside"):
        backend.table("t").partition(kg)


def test_same_name_with_another_kind_raises_state_error(backends: BackendFactory) -> None:
    backend = backends.keyed()
    backend.get_state(ValueStateDescriptor("x"))
    with pytest.raises(StateError, match="declared as value state"):
        backend.get_state(ListStateDescriptor("x"))
    with pytest.raises(StateError, match="declared as value state"):
        backend.table("x")
    backend.table("t")
    with pytest.raises(StateError, match="declared as table state"):
        backend.get_state(MapStateDescriptor("t"))


def test_range_must_fit_max_parallelism(backends: BackendFactory) -> None:
    with pytest.raises(ConfigError):
        backends.keyed(KeyGroupRange(0, 129), max_parallelism=128)
    with pytest.raises(ConfigError):
        KeyGroupRange(5, 4)


def test_restore_skips_foreign_key_groups_and_declares_kinds(backends: BackendFactory) -> None:
    _, blobs = backend_with_state(backends)
    kg_a = key_group_for_key("a", 128)
    only_a = backends.keyed(KeyGroupRange(kg_a, kg_a + 1))
    only_a.restore(blobs.items())
    only_a.set_current_key("a")
    assert only_a.get_state(ValueStateDescriptor("count")).value() == 1
    assert only_a.state_kinds() == {"count": "value"}
    with pytest.raises(StateError, match="saved as value state"):
        bad = backends.keyed()
        bad.table("count")
        bad.restore(blobs.items())


def test_corrupt_blob_raises_state_error_naming_key_group(backends: BackendFactory) -> None:
    """Scenario: one byte of a checkpointed state blob flipped on disk."""
    _, blobs = backend_with_state(backends)
    kg, blob = next(iter(blobs.items()))
    flipped = bytearray(blob)
    flipped[-1] ^= 0xFF
    target = backends.keyed()
    with pytest.raises(CorruptStateError, match=f"key group {kg}: state blob checksum mismatch"):
        target.restore([(kg, bytes(flipped))])
    assert target.is_empty()


def test_truncated_blob_raises_state_error(backends: BackendFactory) -> None:
    """Scenario: a state blob was cut short by a crash during upload."""
    _, blobs = backend_with_state(backends)
    kg, blob = next(iter(blobs.items()))
    for cut in (blob[:5], blob[:-3], b""):
        with pytest.raises(CorruptStateError, match=f"key group {kg}"):
            backends.keyed().restore([(kg, cut)])


def test_blob_handed_to_wrong_key_group_or_kind_is_refused(backends: BackendFactory) -> None:
    """Scenario: a state handle points at another key group's blob, or at a timer blob."""
    _, blobs = backend_with_state(backends)
    (kg1, blob1), (kg2, _) = list(blobs.items())[:2]
    with pytest.raises(CorruptStateError, match=f"belongs to key group {kg1}"):
        backends.keyed().restore([(kg2, blob1)])
    timers = backends.timers()
    timers.register_event_time_timer(kg1, "a", None, 10)
    timer_blob = timers.snapshot().to_bytes_per_key_group()[kg1]
    with pytest.raises(CorruptStateError, match="not a WFKS blob"):
        backends.keyed().restore([(kg1, timer_blob)])


def test_unknown_format_version_is_refused(backends: BackendFactory) -> None:
    """Scenario: a checkpoint written by a newer weirflow with state format version 3."""
    _, blobs = backend_with_state(backends)
    kg, blob = next(iter(blobs.items()))
    newer = blob[:4] + struct.pack(">H", 3) + blob[6:]
    target = backends.keyed()
    with pytest.raises(UnsupportedStateVersionError, match=f"key group {kg}.*version 3"):
        target.restore([(kg, newer)])
    with pytest.raises(UnsupportedFormatVersionError):
        target.restore([(kg, newer)])


def test_version_1_blob_is_refused_as_older(backends: BackendFactory) -> None:
    """Scenario: a checkpoint written by an older weirflow (state format 1, tuples pickled)."""
    _, blobs = backend_with_state(backends)
    kg, blob = next(iter(blobs.items()))
    older = blob[:4] + struct.pack(">H", 1) + blob[6:]
    with pytest.raises(UnsupportedStateVersionError, match=f"key group {kg}.*older weirflow"):
        backends.keyed().restore([(kg, older)])


def test_bad_blob_leaves_backend_unchanged(backends: BackendFactory) -> None:
    """Scenario: the last of several blobs is corrupt; nothing is half-restored."""
    _, blobs = backend_with_state(backends)
    items = list(blobs.items())
    last_kg, last_blob = items[-1]
    target = backends.keyed()
    with pytest.raises(CorruptStateError):
        target.restore([*items[:-1], (last_kg, last_blob[:-1])])
    assert target.is_empty()
    assert target.state_kinds() == {}


def test_other_max_parallelism_and_duplicates_are_refused(backends: BackendFactory) -> None:
    """Scenario: restoring a checkpoint taken with another max_parallelism, or twice."""
    _, blobs = backend_with_state(backends)
    kg = min(blobs)
    with pytest.raises(StateError, match="max_parallelism 128"):
        backends.keyed(FULL, max_parallelism=256).restore([(kg, blobs[kg])])
    target = backends.keyed()
    with pytest.raises(StateError, match="restored twice"):
        target.restore([(kg, blobs[kg]), (kg, blobs[kg])])
    target.restore([(kg, blobs[kg])])
    with pytest.raises(StateError, match="restored twice"):
        target.restore([(kg, blobs[kg])])


def test_snapshot_only_holds_non_empty_key_groups(backends: BackendFactory) -> None:
    backend = backends.keyed()
    state = backend.get_state(ListStateDescriptor("l"))
    backend.set_current_key("a")
    state.add(1)
    backend.set_current_key("b")
    state.add(2)
    state.clear()
    assert list(backend.snapshot().to_bytes_per_key_group()) == [key_group_for_key("a", 128)]
