"""Time windows and lateness."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class TimeWindow:
    """The half-open event-time interval ``[start_ms, end_ms)``.

    Ordered by start, then end. A record with timestamp ``ts`` belongs to it
    when ``start_ms <= ts < end_ms``.

    Attributes:
        start_ms: first millisecond in the window.
        end_ms: first millisecond after the window.
    """

    start_ms: int
    end_ms: int

    def max_timestamp(self) -> int:
        """Return the last millisecond in the window, ``end_ms - 1``; its timer fires there."""
        return self.end_ms - 1

    def intersects(self, other: TimeWindow) -> bool:
        """Return whether the windows overlap or touch (Flink's ``TimeWindow.intersects``).

        Touching counts (``self.end_ms == other.start_ms``), so session
        windows exactly one gap apart merge.
        """
        return self.start_ms <= other.end_ms and self.end_ms >= other.start_ms

    def cover(self, other: TimeWindow) -> TimeWindow:
        """Return the smallest window containing both."""
        return TimeWindow(min(self.start_ms, other.start_ms), max(self.end_ms, other.end_ms))

    def contains(self, timestamp_ms: int) -> bool:
        """Return whether ``start_ms <= timestamp_ms < end_ms``."""
        return self.start_ms <= timestamp_ms < self.end_ms


def is_window_late(window: TimeWindow, allowed_lateness_ms: int, watermark_ms: int) -> bool:
    """Return whether a window is past its allowed lateness (its state may be dropped).

    Args:
        window: the window.
        allowed_lateness_ms: how long (ms) after the window's end late records
            still update it.
        watermark_ms: the current watermark.

    Returns:
        ``window.max_timestamp() + allowed_lateness_ms <= watermark_ms``: a
        record for this window now goes to the late-data side output.
    """
    return window.max_timestamp() + allowed_lateness_ms <= watermark_ms
