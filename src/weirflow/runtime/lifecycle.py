"""The life cycle of one attempt (a deployment of the job), on the coordinator and on a worker."""

from __future__ import annotations

import enum

from weirflow.errors import WeirflowError


class AttemptState(enum.Enum):
    """Where an attempt is.

    ``DEPLOYING``: subtasks are being placed, built, restored and connected.
    ``RUNNING``: every subtask runs; checkpoints are taken.
    ``FINISHING``: the last checkpoint (final or stop) completed and the
    workers were told to finish. ``FINISHED``: counts are in.
    ``CANCELLED``: failed or cancelled; nothing of it may commit any more.
    """

    DEPLOYING = "deploying"
    RUNNING = "running"
    FINISHING = "finishing"
    FINISHED = "finished"
    CANCELLED = "cancelled"


_TRANSITIONS = {
    AttemptState.DEPLOYING: {AttemptState.RUNNING, AttemptState.CANCELLED},
    AttemptState.RUNNING: {AttemptState.FINISHING, AttemptState.CANCELLED},
    AttemptState.FINISHING: {AttemptState.FINISHED, AttemptState.CANCELLED},
    AttemptState.FINISHED: set(),
    AttemptState.CANCELLED: set(),
}


class AttemptLifecycle:
    """An attempt's state with its one guarded transition.

    Args:
        attempt: the attempt number (for errors).
    """

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.state = AttemptState.DEPLOYING

    def move(self, new: AttemptState) -> None:
        """Go to ``new``.

        Raises:
            WeirflowError: the life cycle does not allow it (a runtime bug).
        """
        if new not in _TRANSITIONS[self.state]:
            raise WeirflowError(
                f"attempt {self.attempt}: invalid transition {self.state.name} -> {new.name}"
            )
        self.state = new

    @property
    def over(self) -> bool:
        """Whether stepping should stop (finishing, finished or cancelled)."""
        return self.state in (
            AttemptState.FINISHING,
            AttemptState.FINISHED,
            AttemptState.CANCELLED,
        )
