"""Session merging equals a brute-force reference, whatever the insertion order."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.state import KeyGroupRange, MapStateDescriptor, MemoryKeyedStateBackend
from weirflow.time import MergingWindowSet, TimeWindow, merge_session_windows

timestamp_sets = st.lists(st.integers(-200, 200), min_size=1, max_size=25)
gaps = st.integers(1, 30)


def reference_sessions(timestamps: list[int], gap: int) -> list[TimeWindow]:
    """Group sorted timestamps into sessions: a new session starts after a gap > ``gap``."""
    sessions: list[list[int]] = []
    for ts in sorted(timestamps):
        if sessions and ts - sessions[-1][-1] <= gap:
            sessions[-1].append(ts)
        else:
            sessions.append([ts])
    return [TimeWindow(s[0], s[-1] + gap) for s in sessions]


@settings(max_examples=200)
@given(timestamp_sets, gaps, st.randoms(use_true_random=False))
def test_pure_merge_matches_reference(timestamps: list[int], gap: int, rnd: Any) -> None:
    windows = [TimeWindow(ts, ts + gap) for ts in timestamps]
    rnd.shuffle(windows)
    assert merge_session_windows(windows) == reference_sessions(timestamps, gap)


def run_window_set(order: list[int], gap: int) -> dict[TimeWindow, list[int]]:
    """Feed records through a MergingWindowSet, keeping accumulators the way an operator would."""
    backend = MemoryKeyedStateBackend(KeyGroupRange(0, 128))
    backend.set_current_key("k")
    window_set = MergingWindowSet(backend.get_state(MapStateDescriptor("sessions")))
    accumulators: dict[TimeWindow, list[int]] = {}
    for ts in order:
        merge = window_set.add_window(TimeWindow(ts, ts + gap))
        for absorbed in merge.merged_state_windows:
            accumulators.setdefault(merge.state_window, []).extend(accumulators.pop(absorbed))
        accumulators.setdefault(merge.state_window, []).append(ts)
        assert window_set.state_window(merge.window) == merge.state_window
        current = window_set.windows()
        assert merge_session_windows(current) == current  # pairwise non-intersecting
    return {w: sorted(accumulators.pop(window_set.state_window(w))) for w in window_set.windows()}


@settings(max_examples=200, deadline=None)
@given(timestamp_sets, gaps, st.randoms(use_true_random=False))
def test_window_set_any_order_gives_reference_sessions(
    timestamps: list[int], gap: int, rnd: Any
) -> None:
    order = list(timestamps)
    rnd.shuffle(order)
    result = run_window_set(order, gap)
    expected = reference_sessions(timestamps, gap)
    assert list(result) == expected
    for window, members in result.items():
        assert members == sorted(ts for ts in timestamps if window.start_ms <= ts < window.end_ms)
    assert run_window_set(sorted(timestamps), gap) == result
