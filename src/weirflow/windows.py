"""Window assigners for ``key_by(...).window(...)``, and the watermark strategy.

This is the public import path; the implementations live in :mod:`weirflow.time`.
"""

from weirflow.time import (
    CountWindows,
    SessionWindows,
    SlidingWindows,
    TimeWindow,
    TumblingWindows,
    WatermarkStrategy,
)

__all__ = [
    "CountWindows",
    "SessionWindows",
    "SlidingWindows",
    "TimeWindow",
    "TumblingWindows",
    "WatermarkStrategy",
]
