"""CheckpointConfig validation and millisecond views."""

from datetime import timedelta

import pytest

from weirflow.checkpoint import CheckpointConfig, to_ms
from weirflow.errors import ConfigError


def test_defaults_are_valid_and_in_ms() -> None:
    config = CheckpointConfig()
    assert (config.interval_ms, config.timeout_ms, config.min_pause_ms) == (1000, 600_000, 0)
    assert config.mode == "exactly_once"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"storage": ""}, "storage"),
        ({"interval": timedelta(0)}, "interval"),
        ({"interval": 5}, "interval"),
        ({"timeout": timedelta(microseconds=10)}, "timeout"),
        ({"min_pause": timedelta(seconds=-1)}, "min_pause"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"retained": 0}, "retained"),
        ({"retained": 2.0}, "retained"),
        ({"mode": "twice"}, "mode"),
    ],
)
def test_invalid_field_is_named_in_the_error(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"CheckpointConfig\.{field}"):
        CheckpointConfig(**kwargs)


def test_to_ms_truncates_sub_millisecond_parts() -> None:
    assert to_ms(timedelta(seconds=1, microseconds=1999)) == 1001


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unaligned": True, "mode": "at_least_once"}, "needs mode='exactly_once'"),
        ({"unaligned": True, "max_concurrent": 2}, "needs max_concurrent=1"),
        ({"alignment_timeout": timedelta(seconds=1)}, "add unaligned=True"),
        ({"unaligned": True, "alignment_timeout": 5}, "alignment_timeout must be a datetime"),
        ({"unaligned": 1}, "unaligned must be True or False"),
    ],
)
def test_unaligned_options_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CheckpointConfig(**kwargs)


def test_unaligned_after_ms() -> None:
    assert CheckpointConfig().unaligned_after_ms is None
    assert CheckpointConfig(unaligned=True).unaligned_after_ms == 0
    timeout = timedelta(milliseconds=250)
    assert CheckpointConfig(unaligned=True, alignment_timeout=timeout).unaligned_after_ms == 250
