"""Manifest serialization: any built-in task metadata comes back equal and of the same type,
signed manifests verify under their key only, and no manifest holds a pickle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.checkpoint import Manifest, StateHandle, TaskSnapshot

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 300), inner, max_size=4)
        | st.dictionaries(st.tuples(st.integers(), st.text(max_size=3)), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
    ),
    max_leaves=12,
)
handles = st.builds(
    StateHandle,
    path=st.from_regex(r"chk-[0-9]{1,3}/[a-z]{1,6}", fullmatch=True),
    size=st.integers(0, 2**40),
    checksum=st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
)
snapshots = st.builds(
    TaskSnapshot,
    task_id=st.text(min_size=1, max_size=12),
    handles=st.dictionaries(st.text(min_size=1, max_size=6), handles, max_size=3),
    metadata=st.dictionaries(st.text(max_size=6), values, max_size=4),
    pickled_states=st.frozensets(st.text(min_size=1, max_size=6), max_size=2),
)
keys = st.none() | st.binary(min_size=16, max_size=40)


def _same_types(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, frozenset):
        return all(_same_types(x, next(y for y in b if y == x)) for x in a)
    return True


@settings(max_examples=150, deadline=None)
@given(
    tasks=st.lists(snapshots, max_size=4, unique_by=lambda t: t.task_id),
    checkpoint_id=st.integers(1, 2**62),
    trigger_ms=st.integers(0, 2**45),
    duration_ms=st.integers(0, 10**7),
    key=keys,
)
def test_manifest_round_trip(
    tasks: list[TaskSnapshot], checkpoint_id: int, trigger_ms: int, duration_ms: int, key: bytes
) -> None:
    manifest = Manifest(
        "job",
        checkpoint_id,
        trigger_ms,
        trigger_ms + duration_ms,
        "at_least_once",
        3,
        128,
        {t.task_id: t for t in tasks},
    )
    data = manifest.to_bytes(key)
    assert b"$serde" not in data
    loaded = Manifest.from_bytes(data, "m", key)
    assert loaded == manifest
    assert Manifest.from_bytes(data, "m", None) == manifest
    assert loaded.uses_pickle == any(t.pickled_states for t in tasks)
    for task in tasks:
        assert _same_types(dict(task.metadata), dict(loaded.tasks[task.task_id].metadata))
