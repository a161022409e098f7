"""Snapshot -> restore round-trips every state kind exactly, also across rescaling, on both
keyed backends (memory and RocksDB)."""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state_backends import STATE_BACKENDS, BackendFactory, opened
from weirflow.state import (
    DEFAULT_MAX_PARALLELISM,
    FilesSnapshot,
    KeyedRestore,
    KeyedStateBackend,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    RestoredFiles,
    RestoreMethod,
    ValueStateDescriptor,
    key_group_for_key,
    key_group_range_for_subtask,
    restore_keyed,
    subtask_for_key_group,
)

VALUE = ValueStateDescriptor("value")
LIST = ListStateDescriptor("list")
MAP = MapStateDescriptor("map")
TABLE = "table"

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=4)
values = st.recursive(
    scalars | st.binary(max_size=4) | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.text(max_size=6) | st.integers() | st.tuples(st.text(max_size=3), st.integers())
non_none = values.filter(lambda v: v is not None)

# one key's state: value, list, map, raw-table value
key_states = st.tuples(
    non_none | st.none(),
    st.lists(values, max_size=3),
    st.dictionaries(keys, values, max_size=3),
    non_none | st.none(),
)
datasets = st.dictionaries(keys, key_states, max_size=12)


def fill(backend: KeyedStateBackend, data: dict[Any, tuple[Any, list, dict, Any]]) -> None:
    value, lst, mp = backend.get_state(VALUE), backend.get_state(LIST), backend.get_state(MAP)
    table = backend.table(TABLE)
    for key, (v, items, mapping, raw) in data.items():
        backend.set_current_key(key)
        value.update(v)
        lst.add_all(items)
        for uk, uv in mapping.items():
            mp.put(uk, uv)
        if raw is not None:
            table.put(backend.current_key_group, key, raw)


def owner(key: Any, parallelism: int) -> int:
    return subtask_for_key_group(
        DEFAULT_MAX_PARALLELISM, parallelism, key_group_for_key(key, DEFAULT_MAX_PARALLELISM)
    )


def read(backends: list[KeyedStateBackend], keys_: list[Any]) -> dict[Any, tuple]:
    out = {}
    for key in keys_:
        backend = backends[owner(key, len(backends))]
        backend.set_current_key(key)
        raw = backend.table(TABLE).get(backend.current_key_group, key)
        out[key] = (
            backend.get_state(VALUE).value(),
            backend.get_state(LIST).get(),
            dict(backend.get_state(MAP).items()),
            raw,
        )
    return out


def same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types all the way down (tuples stay tuples)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def expected(data: dict[Any, tuple]) -> dict[Any, tuple]:
    return {k: (v, list(items), dict(mp), raw) for k, (v, items, mp, raw) in data.items()}


ROCKSDB_SHARE = 0.4
"""Share of the examples the RocksDB variants run: each example opens several databases."""


def examples(kind: str, memory_examples: int) -> int:
    """Return how many examples ``kind`` runs (all of them for the memory backend)."""
    return memory_examples if kind == "memory" else max(10, int(memory_examples * ROCKSDB_SHARE))


def backends_for(f: BackendFactory, parallelism: int) -> list[KeyedStateBackend]:
    return [
        f.keyed(key_group_range_for_subtask(DEFAULT_MAX_PARALLELISM, parallelism, i))
        for i in range(parallelism)
    ]


@pytest.mark.parametrize("kind", STATE_BACKENDS)
def test_round_trip_at_same_parallelism(kind: str, rocksdb_root: Path) -> None:
    @settings(max_examples=examples(kind, 80), deadline=None)
    @given(datasets)
    def check(data: dict[Any, tuple]) -> None:
        with opened(kind, rocksdb_root) as f:
            src = f.keyed(KeyGroupRange(0, DEFAULT_MAX_PARALLELISM))
            fill(src, data)
            blobs = src.snapshot().to_bytes_per_key_group()
            dst = f.keyed(KeyGroupRange(0, DEFAULT_MAX_PARALLELISM))
            dst.restore(blobs.items())
            got = read([dst], list(data))
            assert same(got, expected(data))
            assert dst.is_empty() == src.is_empty()
            assert set(dst.snapshot().to_bytes_per_key_group()) == set(blobs)

    check()


@pytest.mark.parametrize("kind", STATE_BACKENDS)
def test_round_trip_across_rescaling(kind: str, rocksdb_root: Path) -> None:
    @settings(max_examples=examples(kind, 40), deadline=None)
    @given(datasets, st.sampled_from([(1, 3), (4, 2), (3, 1), (2, 5)]))
    def check(data: dict[Any, tuple], scaling: tuple[int, int]) -> None:
        with opened(kind, rocksdb_root) as f:
            old_p, new_p = scaling
            old = backends_for(f, old_p)
            by_owner: dict[int, dict[Any, tuple]] = {}
            for key, state in data.items():
                by_owner.setdefault(owner(key, old_p), {})[key] = state
            for i, backend in enumerate(old):
                fill(backend, by_owner.get(i, {}))
            all_blobs: list[tuple[int, bytes]] = []
            for backend in old:
                all_blobs.extend(backend.snapshot().to_bytes_per_key_group().items())

            new = backends_for(f, new_p)
            for backend in new:
                backend.restore(iter(all_blobs))
            for backend in new:
                held = set(backend.snapshot().to_bytes_per_key_group())
                assert held <= set(backend.key_group_range)
                assert held == {kg for kg, _ in all_blobs if kg in backend.key_group_range}
            assert same(read(new, list(data)), expected(data))

    check()


@pytest.mark.parametrize("kind", STATE_BACKENDS)
def test_round_trip_across_rescaling_from_rocksdb_checkpoint_files(
    kind: str, rocksdb_root: Path
) -> None:
    """RocksDB checkpoints (incremental: files) restore at another parallelism into either
    backend: ingested as SST files into RocksDB, read out key by key into memory."""

    @settings(max_examples=examples("rocksdb", 40), deadline=None)
    @given(datasets, st.sampled_from([(1, 3), (4, 2), (3, 1), (2, 5)]))
    def check(data: dict[Any, tuple], scaling: tuple[int, int]) -> None:
        with opened("rocksdb", rocksdb_root) as sources, opened(kind, rocksdb_root) as f:
            old_p, new_p = scaling
            files = []
            for i, backend in enumerate(backends_for(sources, old_p)):
                if i % 2:
                    backend.table(TABLE)  # another state numbering in every other database
                fill(backend, {k: v for k, v in data.items() if owner(k, old_p) == i})
                snapshot = backend.snapshot(1)
                assert isinstance(snapshot, FilesSnapshot)
                files.append(RestoredFiles(snapshot.directory, snapshot.key_group_range, {}))
            new = backends_for(f, new_p)
            for backend in new:
                own = backend.key_group_range
                overlapping = [r for r in files if own.start < r.key_group_range[1]]
                overlapping = [r for r in overlapping if r.key_group_range[0] < own.end]
                stats = restore_keyed(backend, None, KeyedRestore([], [], None, overlapping))
                want = RestoreMethod.INGESTED if kind == "rocksdb" else RestoreMethod.REPLAYED
                assert stats.method is want or not overlapping
                assert stats.blobs == 0 or kind == "memory"
            assert same(read(new, list(data)), expected(data))

    check()


@pytest.mark.parametrize("kind", STATE_BACKENDS)
def test_snapshot_is_not_changed_by_later_updates(kind: str, rocksdb_root: Path) -> None:
    @settings(max_examples=examples(kind, 60), deadline=None)
    @given(datasets, datasets)
    def check(data: dict[Any, tuple], later: dict) -> None:
        with opened(kind, rocksdb_root) as f:
            backend = f.keyed(KeyGroupRange(0, DEFAULT_MAX_PARALLELISM))
            fill(backend, data)
            snap = backend.snapshot()
            before = f.keyed(KeyGroupRange(0, DEFAULT_MAX_PARALLELISM))
            fill(before, data)
            reference = before.snapshot().to_bytes_per_key_group()

            fill(backend, later)
            for key in list(data)[:3]:
                backend.set_current_key(key)
                backend.get_state(LIST).add("late")
                backend.get_state(MAP).put("late", 1)
                backend.get_state(VALUE).clear()
            assert snap.to_bytes_per_key_group() == reference

    check()
