"""The ``local`` scheduler: every subtask in one process, one thread, cooperatively.

Tasks are stepped round robin in plan order; each ``step()`` does a bounded
amount of work. Before stepping, every task handles the barriers of unaligned
checkpoints that wait in its inputs (in plan order), as a priority pass. For
a given input order the run is deterministic. When no task can move (all
wait for input that is not there yet, e.g. an unbounded source at its end),
the scheduler waits a short, bounded time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from weirflow.runtime.channel import Channel
from weirflow.runtime.task import Task


@dataclass
class RoundHooks:
    """Callbacks the scheduler calls once per round (checkpoint trigger, metrics, tests).

    Attributes:
        before_round: called with the current processing time in ms; may
            trigger checkpoints or stop the run by returning ``True``.
    """

    before_round: list[Callable[[int], bool]] = field(default_factory=list)


class LocalScheduler:
    """Runs tasks until all are done or a hook asks to stop.

    Args:
        tasks: every task of the job, in plan order (sources first).
        channels: every channel (for buffer accounting).
        clock: processing time in ms.
        sleep: waits ``seconds`` when no task can move.
        idle_wait_s: how long to wait then (s).
    """

    def __init__(
        self,
        tasks: list[Task],
        channels: list[Channel],
        clock: Callable[[], int],
        sleep: Callable[[float], None],
        idle_wait_s: float = 0.001,
    ) -> None:
        self.tasks = tasks
        self.channels = channels
        self.clock = clock
        self.sleep = sleep
        self.idle_wait_s = idle_wait_s
        self.hooks = RoundHooks()
        self.rounds = 0

    def run(self) -> bool:
        """Step tasks until all are done or a hook returns ``True``.

        Returns:
            ``True`` when every task finished, ``False`` when a hook stopped the run.

        Raises:
            JobFailedError: a task failed (the caller fails the attempt).
        """
        tasks = self.tasks
        has_timers = any(op.uses_processing_time for t in tasks for op in t.chain)
        while True:
            now = self.clock()
            for hook in self.hooks.before_round:
                if hook(now):
                    return False
            if has_timers:
                for t in tasks:
                    t.advance_processing_time(now)
            # in plan order (upstream first), so a barrier crosses every stage this round
            for t in tasks:
                t.take_overtaking_barriers()
            moved = False
            all_done = True
            for t in tasks:
                if t.step():
                    moved = True
                if not t.done:
                    all_done = False
            self.rounds += 1
            if all_done:
                return True
            if not moved:
                self.sleep(self.idle_wait_s)

    def buffered_records(self) -> int:
        """Records in channels plus records waiting in writers for credit."""
        return sum(c.buffered_records for c in self.channels) + sum(
            t.buffered_records for t in self.tasks
        )
