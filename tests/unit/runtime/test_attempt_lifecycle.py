"""The attempt life cycle: allowed transitions only."""

from __future__ import annotations

import pytest

from weirflow.errors import WeirflowError
from weirflow.runtime.lifecycle import AttemptLifecycle, AttemptState


def test_a_finished_attempt_went_through_running_and_finishing() -> None:
    life = AttemptLifecycle(3)
    assert not life.over
    for state in (AttemptState.RUNNING, AttemptState.FINISHING, AttemptState.FINISHED):
        life.move(state)
    assert life.over


@pytest.mark.parametrize(
    "path",
    [
        (AttemptState.FINISHING,),  # a deployment cannot finish before it runs
        (AttemptState.RUNNING, AttemptState.FINISHED),  # no skipping the last checkpoint
        (AttemptState.CANCELLED, AttemptState.RUNNING),  # a cancelled attempt stays cancelled
    ],
)
def test_invalid_transitions_are_refused(path: tuple[AttemptState, ...]) -> None:
    life = AttemptLifecycle(3)
    with pytest.raises(WeirflowError, match="attempt 3: invalid transition"):
        for state in path:
            life.move(state)
