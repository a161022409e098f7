"""Unit tests of watermark strategies and generators (manual clock: plain ints)."""

from datetime import timedelta

import pytest

from weirflow.errors import ConfigError, StateError, UnsupportedFormatVersionError
from weirflow.time import MIN_WATERMARK, WatermarkStrategy, to_ms


def test_bounded_out_of_orderness_follows_flink_convention() -> None:
    gen = WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=2)).create_generator()
    assert gen.current_watermark() == MIN_WATERMARK
    gen.on_timestamps([10_000, 12_000, 11_000], now_ms=0)
    assert gen.current_watermark() == 12_000 - 2_000 - 1
    gen.on_timestamps([5_000], now_ms=1)
    assert gen.current_watermark() == 9_999
    gen.on_timestamps([], now_ms=2)
    assert gen.current_watermark() == 9_999


def test_monotonous_and_no_watermarks() -> None:
    mono = WatermarkStrategy.monotonous_timestamps().create_generator()
    mono.on_timestamps([7], now_ms=0)
    assert mono.current_watermark() == 6
    none = WatermarkStrategy.no_watermarks().create_generator()
    none.on_timestamps([7], now_ms=0)
    assert none.current_watermark() == MIN_WATERMARK


def test_watermark_is_clamped_at_minimum() -> None:
    gen = WatermarkStrategy.bounded_out_of_orderness(timedelta(days=1)).create_generator()
    gen.on_timestamps([MIN_WATERMARK + 5], now_ms=0)
    assert gen.current_watermark() == MIN_WATERMARK


def test_idleness_uses_injected_processing_time() -> None:
    strategy = WatermarkStrategy.monotonous_timestamps().with_idleness(timedelta(seconds=5))
    assert strategy.idleness_ms == 5_000
    gen = strategy.create_generator()
    assert not gen.is_idle(1_000)
    assert not gen.is_idle(5_999)
    assert gen.is_idle(6_000)
    gen.on_timestamps([1], now_ms=7_000)
    assert not gen.is_idle(11_999)
    gen.on_timestamps([], now_ms=11_000)
    assert gen.is_idle(12_000)


def test_never_idle_without_timeout() -> None:
    gen = WatermarkStrategy.monotonous_timestamps().create_generator()
    gen.on_timestamps([], now_ms=0)
    assert WatermarkStrategy.monotonous_timestamps().idleness_ms is None
    assert not gen.is_idle(10**12)


def test_strategy_is_immutable_builder() -> None:
    base = WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=300))
    idle = base.with_idleness(timedelta(minutes=1))
    assert base.idleness_ms is None
    assert idle.max_out_of_orderness_ms == 300
    with pytest.raises(AttributeError):
        base.idleness_ms = 5  # type: ignore[misc]


def test_snapshot_restore_keeps_watermark() -> None:
    strategy = WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=10))
    gen = strategy.create_generator()
    gen.on_timestamps([100, 50], now_ms=0)
    state = gen.snapshot()
    assert state == {"version": 1, "max_ts": 100}
    again = strategy.create_generator()
    again.restore(state)
    assert again.current_watermark() == 89
    empty = strategy.create_generator()
    empty.restore(strategy.create_generator().snapshot())
    assert empty.current_watermark() == MIN_WATERMARK


def test_restore_refuses_unknown_version_and_bad_state() -> None:
    """Scenario: a split's watermark state from a newer weirflow, or mangled, is restored."""
    gen = WatermarkStrategy.monotonous_timestamps().create_generator()
    with pytest.raises(UnsupportedFormatVersionError):
        gen.restore({"version": 2, "max_ts": 1})
    with pytest.raises(StateError):
        gen.restore({"version": 1, "max_ts": "1"})


@pytest.mark.parametrize(
    ("duration", "positive"),
    [
        (timedelta(milliseconds=-1), False),
        (timedelta(0), True),
        (timedelta(microseconds=1500), False),
    ],
)
def test_durations_must_be_whole_non_negative_ms(duration: timedelta, positive: bool) -> None:
    with pytest.raises(ConfigError):
        to_ms(duration, "d", positive=positive)


def test_duration_config_errors_surface_from_builders() -> None:
    with pytest.raises(ConfigError, match="max_out_of_orderness"):
        WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=-1))
    with pytest.raises(ConfigError, match="idleness"):
        WatermarkStrategy.no_watermarks().with_idleness(timedelta(0))
    with pytest.raises(ConfigError, match="timedelta"):
        to_ms(5, "size")  # type: ignore[arg-type]
    assert to_ms(timedelta(minutes=1, milliseconds=5), "d") == 60_005


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError):
        WatermarkStrategy("bounded", -1)
    with pytest.raises(ConfigError):
        WatermarkStrategy("bounded", 0, idleness_ms=0)
    with pytest.raises(ConfigError):
        WatermarkStrategy("sometimes")  # type: ignore[arg-type]
