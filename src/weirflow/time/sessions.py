"""Merging of session windows, per key.

Session windows start as ``[ts, ts + gap)`` per record and merge with every
window they intersect (touching counts). :class:`MergingWindowSet` keeps, per
key, the current windows and, for each, its *state window*: the namespace
under which the window's accumulator is stored. Merging never moves
accumulators; it picks one state window for the merged window and tells the
operator which other state windows to fold into it (Flink's
``MergingWindowSet``). The set lives in a :class:`~weirflow.state.MapState`
(window -> state window) so it is part of every snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from weirflow.state import MapState
from weirflow.time.window import TimeWindow


def merge_session_windows(windows: Iterable[TimeWindow]) -> list[TimeWindow]:
    """Merge windows that intersect (or touch) into their covers.

    Args:
        windows: any windows, in any order, duplicates allowed.

    Returns:
        Disjoint, non-touching windows sorted by start; each is the cover of a
        maximal chain of intersecting input windows.
    """
    merged: list[TimeWindow] = []
    for window in sorted(windows):
        if merged and merged[-1].intersects(window):
            merged[-1] = merged[-1].cover(window)
        else:
            merged.append(window)
    return merged


@dataclass(frozen=True, slots=True)
class WindowMerge:
    """What :meth:`MergingWindowSet.add_window` did.

    Attributes:
        window: the window the new record now belongs to (the merged window,
            or an existing window that already covered it, or the new one).
        state_window: the namespace holding ``window``'s accumulator; add the
            record's value there.
        merged_windows: windows that ceased to exist (absorbed into
            ``window``); their cleanup timers should be deleted. Sorted by start.
        merged_state_windows: state windows whose accumulators must be folded
            into ``state_window`` and then cleared. Sorted by start.
    """

    window: TimeWindow
    state_window: TimeWindow
    merged_windows: tuple[TimeWindow, ...] = ()
    merged_state_windows: tuple[TimeWindow, ...] = ()


class MergingWindowSet:
    """The session windows of the current key, stored in keyed map state.

    Invariant: the windows in the set are pairwise non-intersecting.

    Args:
        mapping: a :class:`~weirflow.state.MapState` (window -> state window)
            bound to the current key; the set reads and writes it on every call.
    """

    __slots__ = ("_mapping",)

    def __init__(self, mapping: MapState) -> None:
        self._mapping = mapping

    def windows(self) -> list[TimeWindow]:
        """Return the current key's windows, sorted by start."""
        return sorted(self._mapping.keys())

    def state_window(self, window: TimeWindow) -> TimeWindow | None:
        """Return the state window of ``window``, or ``None`` if it is not in the set."""
        return self._mapping.get(window)

    def retire_window(self, window: TimeWindow) -> None:
        """Remove a window (after it fired and was purged, or expired).

        Raises:
            StateError: no current key.
        """
        self._mapping.remove(window)

    def add_window(self, new_window: TimeWindow) -> WindowMerge:
        """Add a record's window, merging it with every window it intersects.

        Steps:

        1. Collect the existing windows that intersect ``new_window``.
        2. None: ``new_window`` joins the set as its own state window.
        3. One that already covers ``new_window``: nothing changes.
        4. Otherwise: the cover of all of them replaces them; its state window
           is the state window of the earliest absorbed window (a deterministic
           choice), and the others' state windows are reported for folding.

        Args:
            new_window: ``[ts, ts + gap)`` of the new record.

        Returns:
            A :class:`WindowMerge` saying where the record's value goes.

        Raises:
            StateError: no current key.
        """
        hits = sorted(
            (window, state)
            for window, state in self._mapping.items()
            if window.intersects(new_window)
        )
        if not hits:
            self._mapping.put(new_window, new_window)
            return WindowMerge(new_window, new_window)
        first, first_state = hits[0]
        if (
            len(hits) == 1
            and first.start_ms <= new_window.start_ms <= new_window.end_ms <= first.end_ms
        ):
            return WindowMerge(first, first_state)
        merged = new_window
        for window, _ in hits:
            merged = merged.cover(window)
            self._mapping.remove(window)
        self._mapping.put(merged, first_state)
        return WindowMerge(
            merged,
            first_state,
            tuple(window for window, _ in hits),
            tuple(state for _, state in hits[1:]),
        )
