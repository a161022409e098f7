"""Unit tests of the watermark valve: minimum, idleness, realignment."""

import pytest

from weirflow.errors import ConfigError
from weirflow.time import MIN_WATERMARK, WatermarkValve


def test_minimum_over_inputs() -> None:
    valve = WatermarkValve(2)
    assert valve.on_watermark(0, 10) is None
    assert valve.current() == MIN_WATERMARK
    assert valve.on_watermark(1, 5) == 5
    assert valve.on_watermark(1, 20) == 10
    assert valve.on_watermark(0, 8) is None  # an input never goes back
    assert valve.current() == 10


def test_idle_input_does_not_hold_back() -> None:
    valve = WatermarkValve(3)
    valve.on_watermark(0, 10)
    valve.on_watermark(1, 30)
    assert valve.on_idle(2) == 10
    assert valve.on_idle(0) == 30
    assert not valve.all_idle()
    assert valve.is_idle(0)


def test_all_idle_moves_to_maximum() -> None:
    valve = WatermarkValve(2)
    valve.on_watermark(0, 10)
    valve.on_watermark(1, 40)
    assert valve.current() == 10
    assert valve.on_idle(1) is None
    assert valve.on_idle(0) == 40
    assert valve.all_idle()


def test_reactivated_lagging_input_does_not_pull_back_or_block() -> None:
    """Scenario: an input idles, the others move on, then it resumes with an old watermark."""
    valve = WatermarkValve(2)
    valve.on_watermark(0, 5)
    valve.on_watermark(1, 5)
    valve.on_idle(0)
    assert valve.on_watermark(1, 50) == 50
    assert valve.on_watermark(0, 6) is None  # behind: active but not aligned
    assert valve.current() == 50
    assert valve.on_watermark(1, 70) == 70  # the lagging input does not block
    assert valve.on_watermark(0, 90) is None  # caught up: aligned again
    assert valve.on_watermark(1, 100) == 90


def test_on_active_marks_input_active() -> None:
    valve = WatermarkValve(2)
    valve.on_idle(0)
    valve.on_idle(1)
    valve.on_active(1)
    assert not valve.all_idle()
    assert valve.on_watermark(1, 3) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        WatermarkValve(0)
    valve = WatermarkValve(1)
    with pytest.raises(ConfigError):
        valve.on_watermark(1, 0)
    with pytest.raises(ConfigError):
        valve.on_idle(-1)
