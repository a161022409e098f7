"""NexmarkSource: disjoint interleaved splits, exact resume from positions, pacing by the clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.connectors import NexmarkSource, Source, SourceReader
from weirflow.connectors.nexmark import NexmarkGenerator, NexmarkSourceReader
from weirflow.errors import ConfigError


def drain(reader: NexmarkSourceReader, batch: int = 7) -> dict[str, list[Any]]:
    """Poll until the reader is finished; events per split in the order read."""
    out: dict[str, list[Any]] = {}
    for _ in range(100_000):
        if reader.finished():
            return out
        b = reader.poll(batch)
        if b is not None:
            assert b.timestamps == [e.date_time for e in b.values]
            out.setdefault(b.split, []).extend(b.values)
    raise AssertionError("reader never finished")


def test_it_is_a_source_and_its_reader_a_source_reader() -> None:
    src = NexmarkSource(10, splits=2)
    assert isinstance(src, Source)
    assert isinstance(src.create_reader(src.list_splits(), {}), SourceReader)
    assert src.bounded


@pytest.mark.parametrize(("events", "splits"), [(0, 1), (1, 3), (100, 1), (101, 4), (500, 7)])
def test_splits_are_disjoint_and_together_produce_every_event_once(
    events: int, splits: int
) -> None:
    src = NexmarkSource(events, splits=splits)
    per_split = drain(src.create_reader(src.list_splits(), {}))
    gen = NexmarkGenerator()
    for i, split in enumerate(src.list_splits()):
        expected = [gen.event(n) for n in range(i, events, splits)]
        assert per_split.get(split, []) == expected
        assert src.split_size(i) == len(expected)
    assert sum(map(len, per_split.values())) == events


@settings(max_examples=30, deadline=None)
@given(
    events=st.integers(min_value=0, max_value=400),
    splits=st.integers(min_value=1, max_value=5),
    stop_after=st.integers(min_value=0, max_value=60),
    batch=st.integers(min_value=1, max_value=50),
)
def test_resume_from_positions_continues_exactly(
    events: int, splits: int, stop_after: int, batch: int
) -> None:
    src = NexmarkSource(events, splits=splits)
    straight = drain(src.create_reader(src.list_splits(), {}), batch)
    reader = src.create_reader(src.list_splits(), {})
    first: dict[str, list[Any]] = {}
    for _ in range(stop_after):
        b = reader.poll(batch)
        if b is not None:
            first.setdefault(b.split, []).extend(b.values)
    positions = reader.positions()
    assert positions == {s: len(first.get(s, [])) for s in src.list_splits()}
    rest = drain(src.create_reader(src.list_splits(), positions), batch)
    for s in src.list_splits():
        assert first.get(s, []) + rest.get(s, []) == straight.get(s, [])


def test_a_subtask_reads_only_its_splits() -> None:
    src = NexmarkSource(60, splits=3)
    out = drain(src.create_reader(["nexmark-1"], {}))
    assert list(out) == ["nexmark-1"]
    assert [e.date_time for e in out["nexmark-1"]] == [
        NexmarkGenerator().timestamp_ms(n) for n in range(1, 60, 3)
    ]


def test_order_picks_the_preferred_split() -> None:
    src = NexmarkSource(100, splits=2)
    reader = src.create_reader(src.list_splits(), {})
    assert reader.poll(5, order=["nexmark-1", "nexmark-0"]).split == "nexmark-1"  # type: ignore[union-attr]
    assert reader.poll(5, order=["nexmark-1", "nexmark-0"]).split == "nexmark-1"  # type: ignore[union-attr]
    assert reader.poll(5, order=["nexmark-0"]).split == "nexmark-0"  # type: ignore[union-attr]


def test_a_split_is_reported_finished_one_poll_after_its_last_batch() -> None:
    src = NexmarkSource(4, splits=1)
    reader = src.create_reader(src.list_splits(), {})
    batch = reader.poll(10)
    assert batch is not None and len(batch.values) == 4
    assert reader.newly_finished == [] and not reader.finished()
    assert reader.poll(10) is None
    assert reader.newly_finished == ["nexmark-0"] and reader.finished()


class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


def test_pacing_releases_events_as_the_clock_advances() -> None:
    clock = FakeClock()
    # 1,000 events/s over 2 splits: each split gets one event every 2 ms
    src = NexmarkSource(100, splits=2, rate=1000, clock_ns=clock)
    reader = src.create_reader(src.list_splits(), {})
    got = [reader.poll(50), reader.poll(50)]
    assert [len(b.values) for b in got if b is not None] == [1, 1]
    assert reader.poll(50) is None
    clock.ns += 10_000_000
    b0, b1 = reader.poll(50), reader.poll(50)
    assert b0 is not None and b1 is not None
    assert (len(b0.values), len(b1.values)) == (5, 5)
    assert reader.poll(50) is None
    clock.ns += 1_000_000_000
    assert sum(len(b.values) for b in iter(lambda: reader.poll(50), None)) == 88


def test_pacing_never_changes_the_events() -> None:
    clock = FakeClock()
    paced = NexmarkSource(30, splits=2, rate=10, clock_ns=clock)
    reader = paced.create_reader(paced.list_splits(), {})
    out: dict[str, list[Any]] = {}
    while not reader.finished():
        clock.ns += 50_000_000
        b = reader.poll(3)
        if b is not None:
            out.setdefault(b.split, []).extend(b.values)
    src = NexmarkSource(30, splits=2)
    assert out == drain(src.create_reader(src.list_splits(), {}))


def test_a_restored_paced_reader_does_not_burst_to_catch_up() -> None:
    clock = FakeClock()
    src = NexmarkSource(1000, splits=1, rate=100, clock_ns=clock)
    reader = src.create_reader(src.list_splits(), {"nexmark-0": 500})
    b = reader.poll(1000)
    assert b is not None and len(b.values) == 1
    assert b.values[0] == NexmarkGenerator().event(500)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"events": -1}, "events"),
        ({"events": 10, "splits": 0}, "splits"),
        ({"events": 10, "rate": 0}, "rate"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NexmarkSource(**kwargs)


def test_unknown_splits_and_positions_out_of_range_are_refused() -> None:
    src = NexmarkSource(10, splits=2)
    with pytest.raises(ConfigError, match="no split"):
        src.create_reader(["nexmark-2"], {})
    with pytest.raises(ConfigError, match="out of range"):
        src.create_reader(["nexmark-0"], {"nexmark-0": 6})
