"""The watermark valve combines its inputs by minimum over non-idle inputs, never going back."""

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.time import MIN_WATERMARK, WatermarkValve

N = 3
ops = st.lists(
    st.one_of(
        st.tuples(st.just("wm"), st.integers(0, N - 1), st.integers(-100, 100)),
        st.tuples(st.just("idle"), st.integers(0, N - 1), st.just(0)),
        st.tuples(st.just("active"), st.integers(0, N - 1), st.just(0)),
    ),
    max_size=50,
)


@settings(max_examples=300)
@given(ops)
def test_valve_is_monotone_min_over_non_idle(operations: list[tuple[str, int, int]]) -> None:
    valve = WatermarkValve(N)
    per_input = [MIN_WATERMARK] * N
    idle = [False] * N
    previous = valve.current()
    for kind, i, wm in operations:
        if kind == "wm":
            per_input[i] = max(per_input[i], wm)
            idle[i] = False
            result = valve.on_watermark(i, wm)
        elif kind == "idle":
            idle[i] = True
            result = valve.on_idle(i)
        else:
            idle[i] = False
            result = valve.on_active(i)
        now = valve.current()
        assert now >= previous
        assert result == (now if now > previous else None)
        assert valve.all_idle() == all(idle)
        active = [w for w, is_idle in zip(per_input, idle, strict=True) if not is_idle]
        if all(idle):
            assert now <= max(per_input)
        else:
            # never ahead of an active input that is caught up, never ahead of the
            # maximum; equal to the minimum when no active input lags behind
            assert now <= max(per_input)
            if min(active) >= previous:
                assert now == min(active)
        previous = now


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, N - 1), st.integers(-100, 100)), max_size=40))
def test_valve_without_idleness_is_running_min_of_maxima(events: list[tuple[int, int]]) -> None:
    valve = WatermarkValve(N)
    per_input = [MIN_WATERMARK] * N
    for i, wm in events:
        per_input[i] = max(per_input[i], wm)
        valve.on_watermark(i, wm)
        assert valve.current() == min(per_input)
