"""Conversion of public ``timedelta`` durations to the integer milliseconds used inside.

Time inside weirflow is integer milliseconds: floats would make window
boundaries depend on rounding, and integers compare and hash exactly.
"""

from __future__ import annotations

from datetime import timedelta

from weirflow.errors import ConfigError

_MS = timedelta(milliseconds=1)


def to_ms(duration: timedelta, what: str, *, positive: bool = False) -> int:
    """Return ``duration`` as whole milliseconds.

    Args:
        duration: the duration.
        what: the parameter's name, for the message.
        positive: require ``duration > 0`` (otherwise ``>= 0``).

    Returns:
        The number of milliseconds (int).

    Raises:
        ConfigError: not a ``timedelta``, negative (or zero when ``positive``),
            or not a whole number of milliseconds.
    """
    if not isinstance(duration, timedelta):
        raise ConfigError(f"{what} must be a datetime.timedelta, got {type(duration).__name__}")
    ms, rest = divmod(duration, _MS)
    if rest:
        raise ConfigError(f"{what} must be a whole number of milliseconds, got {duration}")
    if ms < 0 or (positive and ms == 0):
        raise ConfigError(
            f"{what} must be {'positive' if positive else 'non-negative'}: {duration}"
        )
    return ms
