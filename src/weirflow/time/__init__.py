"""weirflow.time: event time — watermarks, timers, window assigners, session merging, lateness.

Time is integer milliseconds (``*_ms``) everywhere inside; public durations
are ``timedelta``. The timer service is keyed state and lives in
:mod:`weirflow.state`; it is re-exported here for operators that think of it
as part of event time.
"""

from weirflow.state import Timer, TimerService, TimerSnapshot
from weirflow.time.assigners import CountWindows, SessionWindows, SlidingWindows, TumblingWindows
from weirflow.time.duration import to_ms
from weirflow.time.sessions import MergingWindowSet, WindowMerge, merge_session_windows
from weirflow.time.timestamps import check_timestamp_ms
from weirflow.time.valve import WatermarkValve
from weirflow.time.watermarks import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    WatermarkGenerator,
    WatermarkKind,
    WatermarkStrategy,
)
from weirflow.time.window import TimeWindow, is_window_late

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "CountWindows",
    "MergingWindowSet",
    "SessionWindows",
    "SlidingWindows",
    "TimeWindow",
    "Timer",
    "TimerService",
    "TimerSnapshot",
    "TumblingWindows",
    "WatermarkGenerator",
    "WatermarkKind",
    "WatermarkStrategy",
    "WatermarkValve",
    "WindowMerge",
    "check_timestamp_ms",
    "is_window_late",
    "merge_session_windows",
    "to_ms",
]
