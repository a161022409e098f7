"""The check of event timestamps that a user's ``timestamp=`` function returns.

Event time is an ``int`` of milliseconds since the epoch (1970-01-01 UTC).
Floats are refused unless they hold a whole number: a float of seconds
(``time.time()``) or of fractional milliseconds would put records into the
wrong window by rounding. Negative values are valid event time (before
1970) and window assigners floor them correctly. A ``bool`` is refused
although Python counts it as an ``int``: a timestamp function returning
``True`` is a bug (a comparison where a field was meant), not time 1.
"""

from __future__ import annotations

import operator

from weirflow.errors import TimestampError

_HINT = (
    "event time must be an int of milliseconds since the epoch "
    "(for a datetime: int(dt.timestamp() * 1000))"
)


def check_timestamp_ms(value: object, origin: str) -> int:
    """Return ``value`` as event time in ms, or raise naming ``origin``.

    Accepted: an ``int`` (returned unchanged, negatives included), any other
    integer type with ``__index__`` (numpy integers), and a float that holds
    a whole number (``1.7e12`` → ``1700000000000``).

    Args:
        value: what the timestamp function returned.
        origin: what produced it, for the message (``"timestamp function 'f' (job.py:3)"``).

    Returns:
        The timestamp as an ``int`` of ms since the epoch.

    Raises:
        TimestampError: ``value`` is ``None``, a ``bool``, a ``str``, a float
            that is not a whole number (also NaN and infinities), or anything
            else that is not an integer.
    """
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise TimestampError(f"{origin} returned {value!r}, a bool; {_HINT}")
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise TimestampError(
            f"{origin} returned {value!r}, a float that is not a whole number of ms; {_HINT}"
        )
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        pass
    raise TimestampError(f"{origin} returned {value!r:.80} ({type(value).__name__}); {_HINT}")
