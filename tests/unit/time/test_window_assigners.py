"""Unit tests of time windows, assigners, count windows and lateness."""

from datetime import timedelta

import pytest

import weirflow.windows as public
from weirflow.errors import ConfigError
from weirflow.time import (
    CountWindows,
    SessionWindows,
    SlidingWindows,
    TimeWindow,
    TumblingWindows,
    WatermarkStrategy,
    is_window_late,
)


def test_time_window_basics() -> None:
    w = TimeWindow(0, 10)
    assert w.max_timestamp() == 9
    assert w.contains(0) and w.contains(9) and not w.contains(10)
    assert w.intersects(TimeWindow(10, 20))  # touching counts
    assert not w.intersects(TimeWindow(11, 20))
    assert w.cover(TimeWindow(15, 20)) == TimeWindow(0, 20)
    assert sorted([TimeWindow(5, 6), TimeWindow(0, 9), TimeWindow(0, 3)]) == [
        TimeWindow(0, 3),
        TimeWindow(0, 9),
        TimeWindow(5, 6),
    ]


def test_tumbling_handles_negative_timestamps_and_offset() -> None:
    hour = TumblingWindows(timedelta(hours=1), offset=timedelta(minutes=15))
    assert hour.size_ms == 3_600_000
    assert hour.assign(0) == [TimeWindow(-2_700_000, 900_000)]
    assert hour.window_start(-1) == -2_700_000
    assert TumblingWindows(timedelta(seconds=1)).assign(-1) == [TimeWindow(-1000, 0)]


def test_sliding_windows_ordered_by_start() -> None:
    sliding = SlidingWindows(timedelta(seconds=10), timedelta(seconds=5))
    assert sliding.assign(7_000) == [TimeWindow(0, 10_000), TimeWindow(5_000, 15_000)]
    gappy = SlidingWindows(timedelta(seconds=1), timedelta(seconds=3))
    assert gappy.assign(1_500) == []


def test_session_and_merging_flags() -> None:
    assert SessionWindows(timedelta(seconds=30)).gap_ms == 30_000
    assert SessionWindows(timedelta(seconds=30)).is_merging
    assert not TumblingWindows(timedelta(seconds=1)).is_merging


@pytest.mark.parametrize(
    "build",
    [
        lambda: TumblingWindows(timedelta(0)),
        lambda: SlidingWindows(timedelta(seconds=1), timedelta(0)),
        lambda: SessionWindows(timedelta(seconds=-1)),
        lambda: TumblingWindows(timedelta(microseconds=10)),
        lambda: CountWindows(0),
        lambda: CountWindows(3, slide=0),
    ],
)
def test_invalid_assigners_raise_config_error(build: object) -> None:
    with pytest.raises(ConfigError):
        build()  # type: ignore[operator]


def test_count_windows_tumbling_and_sliding() -> None:
    tumbling = CountWindows(3)
    assert not tumbling.is_sliding
    assert [c for c in range(1, 10) if tumbling.fires_at(c)] == [3, 6, 9]
    assert tumbling.window_length(3) == 3
    sliding = CountWindows(4, slide=2)
    assert sliding.is_sliding
    assert [c for c in range(1, 9) if sliding.fires_at(c)] == [2, 4, 6, 8]
    assert [sliding.window_length(c) for c in (2, 4, 6)] == [2, 4, 4]
    assert not sliding.fires_at(0)


def test_is_window_late() -> None:
    w = TimeWindow(0, 10)
    assert not is_window_late(w, 0, 8)
    assert is_window_late(w, 0, 9)
    assert not is_window_late(w, 5, 13)
    assert is_window_late(w, 5, 14)


def test_public_windows_module_re_exports() -> None:
    assert public.TumblingWindows is TumblingWindows
    assert public.SlidingWindows is SlidingWindows
    assert public.SessionWindows is SessionWindows
    assert public.CountWindows is CountWindows
    assert public.TimeWindow is TimeWindow
    assert public.WatermarkStrategy is WatermarkStrategy
