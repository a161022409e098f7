"""Key-group ranges partition [0, max_parallelism) and agree with subtask_for_key_group."""

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.serde import stable_hash
from weirflow.state import (
    KeyGroupRange,
    key_group_for_key,
    key_group_range_for_subtask,
    subtask_for_key_group,
)


@st.composite
def parallelisms(draw: st.DrawFn) -> tuple[int, int]:
    max_p = draw(st.integers(min_value=1, max_value=4096))
    p = draw(st.integers(min_value=1, max_value=max_p))
    return max_p, p


@settings(max_examples=200)
@given(parallelisms())
def test_ranges_partition_all_key_groups_in_order(mp: tuple[int, int]) -> None:
    max_p, p = mp
    ranges = [key_group_range_for_subtask(max_p, p, i) for i in range(p)]
    assert ranges[0].start == 0
    assert ranges[-1].end == max_p
    for before, after in pairwise(ranges):
        assert before.end == after.start
    sizes = [len(r) for r in ranges]
    assert min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == max_p


@settings(max_examples=200)
@given(parallelisms(), st.data())
def test_subtask_for_key_group_agrees_with_ranges(mp: tuple[int, int], data: st.DataObject) -> None:
    max_p, p = mp
    kg = data.draw(st.integers(min_value=0, max_value=max_p - 1))
    subtask = subtask_for_key_group(max_p, p, kg)
    assert 0 <= subtask < p
    assert kg in key_group_range_for_subtask(max_p, p, subtask)
    for other in {0, subtask - 1, subtask + 1, p - 1} - {subtask}:
        if 0 <= other < p:
            assert kg not in key_group_range_for_subtask(max_p, p, other)


@settings(max_examples=60)
@given(st.integers(min_value=1, max_value=64))
def test_every_key_group_has_exactly_one_owner(p: int) -> None:
    max_p = 128
    owners = {
        kg: [i for i in range(p) if kg in key_group_range_for_subtask(max_p, p, i)]
        for kg in range(max_p)
    }
    assert all(owners[kg] == [subtask_for_key_group(max_p, p, kg)] for kg in range(max_p))


@given(st.text() | st.integers() | st.tuples(st.text(), st.integers()), st.integers(1, 1000))
def test_key_group_is_stable_and_in_range(key: object, max_p: int) -> None:
    kg = key_group_for_key(key, max_p)
    assert kg == stable_hash(key) % max_p
    assert 0 <= kg < max_p
    assert key_group_for_key(key, max_p) == kg


@given(st.integers(0, 50), st.integers(0, 50))
def test_range_container_protocol(start: int, length: int) -> None:
    r = KeyGroupRange(start, start + length)
    assert list(r) == list(range(start, start + length))
    assert len(r) == length
    assert r.is_empty() == (length == 0)
    assert (start in r) == (length > 0)
    assert (start + length) not in r
