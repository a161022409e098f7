"""Watermark strategies and the per-split watermark generator.

A watermark ``w`` asserts that no more records with timestamp ``<= w`` are
expected. Following Flink's ``BoundedOutOfOrdernessWatermarks``, a generator
that has seen a maximum timestamp ``m`` emits ``m - max_out_of_orderness_ms - 1``;
monotonous timestamps are the case ``max_out_of_orderness_ms == 0``.
:data:`MAX_WATERMARK` marks the end of input and fires every timer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from weirflow.errors import ConfigError, StateError
from weirflow.serde import check_format_version
from weirflow.time.duration import to_ms

MIN_WATERMARK: Final = -(2**63)
"""The watermark before any record: nothing is known yet."""
MAX_WATERMARK: Final = 2**63 - 1
"""The watermark at end of input: every event-time timer fires."""

WatermarkKind = Literal["bounded", "none"]
"""``bounded``: bounded out-of-orderness (monotonous is bound 0); ``none``: no watermarks."""

_GENERATOR_STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class WatermarkStrategy:
    """How a source derives watermarks from event timestamps (immutable builder).

    Build it with :meth:`bounded_out_of_orderness`, :meth:`monotonous_timestamps`
    or :meth:`no_watermarks`, optionally followed by :meth:`with_idleness`.

    Raises:
        ConfigError: (on direct construction) unknown kind, negative bound,
            non-positive idleness.

    Attributes:
        kind: ``"bounded"`` or ``"none"``.
        max_out_of_orderness_ms: how late (ms) a record may be behind the
            largest timestamp seen and still count as on time.
        idleness_ms: processing time (ms) without records after which a split
            is idle, or ``None`` (never idle).
    """

    kind: WatermarkKind
    max_out_of_orderness_ms: int = 0
    idleness_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("bounded", "none"):
            raise ConfigError(f"unknown watermark kind {self.kind!r}")
        if type(self.max_out_of_orderness_ms) is not int or self.max_out_of_orderness_ms < 0:
            raise ConfigError(
                f"max_out_of_orderness_ms must be an int >= 0, got {self.max_out_of_orderness_ms!r}"
            )
        if self.idleness_ms is not None and (
            type(self.idleness_ms) is not int or self.idleness_ms <= 0
        ):
            raise ConfigError(f"idleness_ms must be a positive int, got {self.idleness_ms!r}")

    @staticmethod
    def bounded_out_of_orderness(max_out_of_orderness: timedelta) -> WatermarkStrategy:
        """Watermarks trailing the largest timestamp seen by ``max_out_of_orderness``.

        Args:
            max_out_of_orderness: non-negative, whole milliseconds.

        Raises:
            ConfigError: negative or sub-millisecond duration.
        """
        return WatermarkStrategy("bounded", to_ms(max_out_of_orderness, "max_out_of_orderness"))

    @staticmethod
    def monotonous_timestamps() -> WatermarkStrategy:
        """Watermarks for timestamps that never decrease (out-of-orderness 0)."""
        return WatermarkStrategy("bounded", 0)

    @staticmethod
    def no_watermarks() -> WatermarkStrategy:
        """No watermarks: event time never advances until end of input."""
        return WatermarkStrategy("none")

    def with_idleness(self, timeout: timedelta) -> WatermarkStrategy:
        """Return a copy that marks a split idle after ``timeout`` without records.

        An idle split no longer holds back the watermark downstream (see
        :class:`~weirflow.time.WatermarkValve`).

        Args:
            timeout: positive, whole milliseconds of processing time.

        Raises:
            ConfigError: zero, negative or sub-millisecond timeout.
        """
        return WatermarkStrategy(
            self.kind, self.max_out_of_orderness_ms, to_ms(timeout, "idleness", positive=True)
        )

    def create_generator(self) -> WatermarkGenerator:
        """Return a new generator for one source split."""
        return WatermarkGenerator(self)


class WatermarkGenerator:
    """Watermark of one source split, from the timestamps it has read.

    Its state (the largest timestamp seen) is snapshotted with the split
    position, so a restored split does not emit a watermark lower than one
    it emitted before the checkpoint. The idleness clock is processing time
    and is not snapshotted: it restarts on restore.

    Args:
        strategy: the strategy this generator follows.
    """

    __slots__ = ("_last_active_ms", "_max_ts", "_strategy")

    def __init__(self, strategy: WatermarkStrategy) -> None:
        self._strategy = strategy
        self._max_ts: int | None = None
        self._last_active_ms: int | None = None

    @property
    def strategy(self) -> WatermarkStrategy:
        """The strategy this generator follows."""
        return self._strategy

    def on_timestamps(self, timestamps: Sequence[int], now_ms: int) -> None:
        """Account for one batch of records read from the split.

        Args:
            timestamps: the batch's event timestamps (ms); may be empty.
            now_ms: current processing time (ms) from the injected clock.
        """
        if timestamps:
            batch_max = max(timestamps)
            if self._max_ts is None or batch_max > self._max_ts:
                self._max_ts = batch_max
            self._last_active_ms = now_ms
        elif self._last_active_ms is None:
            self._last_active_ms = now_ms

    def current_watermark(self) -> int:
        """Return the split's watermark (ms).

        Returns:
            ``max_ts - max_out_of_orderness_ms - 1`` (clamped to
            :data:`MIN_WATERMARK`), or :data:`MIN_WATERMARK` before any record
            and for the ``no_watermarks`` strategy.
        """
        if self._max_ts is None or self._strategy.kind == "none":
            return MIN_WATERMARK
        return max(MIN_WATERMARK, self._max_ts - self._strategy.max_out_of_orderness_ms - 1)

    def is_idle(self, now_ms: int) -> bool:
        """Return whether the split has read no record for ``idleness_ms`` of processing time.

        The idleness clock starts at the first :meth:`on_timestamps` call (even
        with an empty batch) or, failing that, at the first ``is_idle`` call.

        Args:
            now_ms: current processing time (ms) from the injected clock.

        Returns:
            Always ``False`` when the strategy has no idleness timeout.
        """
        timeout = self._strategy.idleness_ms
        if timeout is None:
            return False
        if self._last_active_ms is None:
            self._last_active_ms = now_ms
            return False
        return now_ms - self._last_active_ms >= timeout

    def snapshot(self) -> dict[str, Any]:
        """Return the generator's state as plain data: ``{"version": 1, "max_ts": int | None}``."""
        return {"version": _GENERATOR_STATE_VERSION, "max_ts": self._max_ts}

    def restore(self, state: dict[str, Any]) -> None:
        """Load state written by :meth:`snapshot`.

        Args:
            state: the dict from :meth:`snapshot`.

        Raises:
            UnsupportedFormatVersionError: unknown version.
            StateError: malformed state.
        """
        check_format_version(state.get("version"), _GENERATOR_STATE_VERSION, "watermark state")
        max_ts = state.get("max_ts")
        if max_ts is not None and type(max_ts) is not int:
            raise StateError(f"watermark state: max_ts must be an int or None, got {max_ts!r}")
        self._max_ts = max_ts
        self._last_active_ms = None
