"""A task's input watermark: the minimum over its inputs, ignoring idle ones.

Follows Flink's ``StatusWatermarkValve`` (Arroyo's watermark holder does the
same): each input keeps its own watermark and idle flag; the combined
watermark is the minimum over inputs that are active and *aligned*; it never
goes backwards.

An input that becomes active again after idling is not aligned while its
watermark is behind the combined one: it stops the combined watermark from
moving only after it has caught up, so reactivation never pulls it back.
When every input is idle, the combined watermark moves to the maximum over
all inputs (Flink does the same), so downstream windows are not stuck behind
inputs that will send nothing more for a while.
"""

from __future__ import annotations

from weirflow.errors import ConfigError
from weirflow.time.watermarks import MIN_WATERMARK


class WatermarkValve:
    """Combines the watermarks of ``num_inputs`` input channels.

    Args:
        num_inputs: number of inputs (>= 1).

    Raises:
        ConfigError: ``num_inputs < 1``.
    """

    __slots__ = ("_aligned", "_current", "_idle", "_watermarks")

    def __init__(self, num_inputs: int) -> None:
        if num_inputs < 1:
            raise ConfigError(f"a watermark valve needs at least one input, got {num_inputs}")
        self._watermarks = [MIN_WATERMARK] * num_inputs
        self._idle = [False] * num_inputs
        self._aligned = [True] * num_inputs
        self._current = MIN_WATERMARK

    def _check(self, input_index: int) -> None:
        if not 0 <= input_index < len(self._watermarks):
            raise ConfigError(
                f"input {input_index} out of range for a valve of {len(self._watermarks)} inputs"
            )

    def on_watermark(self, input_index: int, watermark_ms: int) -> int | None:
        """Record a watermark from one input; the input becomes active.

        A watermark lower than the input's previous one is ignored (inputs are
        monotone by contract; this guards against replayed events).

        Args:
            input_index: the input, ``0 <= input_index < num_inputs``.
            watermark_ms: the input's new watermark.

        Returns:
            The new combined watermark if it advanced, else ``None``.

        Raises:
            ConfigError: ``input_index`` out of range.
        """
        self._check(input_index)
        self._idle[input_index] = False
        if watermark_ms > self._watermarks[input_index]:
            self._watermarks[input_index] = watermark_ms
        self._aligned[input_index] = self._watermarks[input_index] >= self._current
        return self._advance()

    def on_idle(self, input_index: int) -> int | None:
        """Mark an input idle: it stops holding the combined watermark back.

        Returns:
            The new combined watermark if it advanced, else ``None``.

        Raises:
            ConfigError: ``input_index`` out of range.
        """
        self._check(input_index)
        self._idle[input_index] = True
        return self._advance()

    def on_active(self, input_index: int) -> None:
        """Mark an input active again (a record or watermark arrived from it).

        It holds the combined watermark back again once its watermark has
        caught up with it.

        Raises:
            ConfigError: ``input_index`` out of range.
        """
        self._check(input_index)
        self._idle[input_index] = False
        self._aligned[input_index] = self._watermarks[input_index] >= self._current

    def current(self) -> int:
        """Return the combined watermark (:data:`MIN_WATERMARK` until every input sent one)."""
        return self._current

    def all_idle(self) -> bool:
        """Return whether every input is idle."""
        return all(self._idle)

    def is_idle(self, input_index: int) -> bool:
        """Return whether one input is idle.

        Raises:
            ConfigError: ``input_index`` out of range.
        """
        self._check(input_index)
        return self._idle[input_index]

    def _advance(self) -> int | None:
        holding = [
            wm
            for wm, idle, aligned in zip(self._watermarks, self._idle, self._aligned, strict=True)
            if not idle and aligned
        ]
        if holding:
            candidate = min(holding)
        elif all(self._idle):
            candidate = max(self._watermarks)
        else:
            return None
        if candidate > self._current:
            self._current = candidate
            return candidate
        return None
