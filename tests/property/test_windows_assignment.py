"""Window assignment equals a brute-force search over all aligned windows."""

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.time import SessionWindows, SlidingWindows, TimeWindow, TumblingWindows

timestamps = st.integers(-(10**12), 10**12)
sizes = st.integers(1, 50)
offsets = st.integers(-60, 60)


def brute_force(ts: int, size: int, slide: int, offset: int) -> list[TimeWindow]:
    """Every window [s, s + size) with s = offset + k * slide that contains ts, by scanning k."""
    k = (ts - offset) // slide  # a start at or before ts; scan a generous band around it
    out = []
    for j in range(k - size - 2, k + 3):
        start = offset + j * slide
        if start <= ts < start + size:
            out.append(TimeWindow(start, start + size))
    return out


@settings(max_examples=300)
@given(timestamps, sizes, offsets)
def test_tumbling_equals_brute_force(ts: int, size: int, offset: int) -> None:
    assigner = TumblingWindows(timedelta(milliseconds=size), timedelta(milliseconds=offset))
    windows = assigner.assign(ts)
    assert windows == brute_force(ts, size, size, offset)
    assert assigner.window_start(ts) == windows[0].start_ms
    assert assigner.size_ms == size


@settings(max_examples=300)
@given(timestamps, sizes, sizes, offsets)
def test_sliding_equals_brute_force(ts: int, size: int, slide: int, offset: int) -> None:
    assigner = SlidingWindows(
        timedelta(milliseconds=size), timedelta(milliseconds=slide), timedelta(milliseconds=offset)
    )
    windows = assigner.assign(ts)
    assert windows == brute_force(ts, size, slide, offset)
    assert windows == sorted(windows)


@settings(max_examples=100)
@given(st.integers(-1000, 1000), st.integers(1, 5))
def test_small_negative_timestamps_tumbling(ts: int, size: int) -> None:
    (window,) = TumblingWindows(timedelta(milliseconds=size)).assign(ts)
    assert window.start_ms <= ts < window.end_ms
    assert window.start_ms % size == 0


@given(timestamps, st.integers(1, 10**6))
def test_session_assigns_gap_window(ts: int, gap: int) -> None:
    assigner = SessionWindows(timedelta(milliseconds=gap))
    assert assigner.assign(ts) == [TimeWindow(ts, ts + gap)]
    assert assigner.is_merging
