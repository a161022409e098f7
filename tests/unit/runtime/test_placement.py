"""Placing subtask indices on workers' slots."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weirflow.errors import ConfigError
from weirflow.runtime.placement import place


def test_even_contiguous_spread() -> None:
    assert place(4, [("a", 2), ("b", 2)]) == {0: "a", 1: "a", 2: "b", 3: "b"}
    assert place(3, [("a", 2), ("b", 2)]) == {0: "a", 1: "b", 2: "b"} or place(
        3, [("a", 2), ("b", 2)]
    ) == {0: "a", 1: "a", 2: "b"}


def test_too_few_slots_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="needs 5 slots but the workers offer 4"):
        place(5, [("a", 2), ("b", 2)])


@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=6).flatmap(
        lambda slots: st.tuples(st.just(slots), st.integers(1, max(1, sum(slots))))
    )
)
def test_every_index_placed_once_within_slots_and_evenly(case: tuple[list[int], int]) -> None:
    slots, parallelism = case
    workers = [(f"w{k}", s) for k, s in enumerate(slots)]
    if sum(slots) < parallelism:
        with pytest.raises(ConfigError):
            place(parallelism, workers)
        return
    owners = place(parallelism, workers)
    assert sorted(owners) == list(range(parallelism))
    per_worker = Counter(owners.values())
    for name, s in workers:
        assert per_worker[name] <= s
    # even: a worker with free slots never has two fewer than another
    loads = {name: per_worker[name] for name, s in workers if s > 0}
    for name, s in workers:
        if s > 0 and loads[name] < s:
            assert all(loads[name] >= other - 1 for other in loads.values())
