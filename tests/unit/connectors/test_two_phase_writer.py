"""The two-phase-commit writer base: guarded transaction states, the pending map, restore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from weirflow.connectors import TransactionStateError, TwoPhaseCommitWriter, TxnState
from weirflow.connectors.two_phase import Transaction


class ListWriter(TwoPhaseCommitWriter[list[Any]]):
    """Stages records in memory; committing appends them to ``visible``."""

    def __init__(self, restored: Mapping[int, Any] | None = None) -> None:
        super().__init__()
        self.visible: list[Any] = []
        self.staged: list[Any] = []
        self.restore(restored or {})

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self.staged.extend(values)

    def _prepare(self, checkpoint_id: int) -> list[Any]:
        out, self.staged = self.staged, []
        return out

    def _commit(self, checkpoint_id: int, due: list[tuple[int, list[Any]]]) -> None:
        for _, values in due:
            self.visible.extend(values)

    def _state(self, checkpoint_id: int, committables: list[tuple[int, list[Any]]]) -> Any:
        return [[c, v] for c, v in committables]

    def _restore(self, restored: Mapping[int, Any]) -> None:
        for state in restored.values():
            self._commit(-1, [(c, v) for c, v in state])


def test_transitions_follow_the_table() -> None:
    t: Transaction[int] = Transaction()
    with pytest.raises(TransactionStateError, match="open -> committed"):
        t.to(TxnState.COMMITTED)
    t.to(TxnState.PRE_COMMITTED)
    t.to(TxnState.COMMITTED)
    with pytest.raises(TransactionStateError):
        t.to(TxnState.ABORTED)


def test_pending_map_commits_up_to_the_completed_checkpoint() -> None:
    w = ListWriter()
    w.write([1, 2], None)
    assert w.pre_commit(1) == [[1, [1, 2]]]
    w.write([3], None)
    assert w.pre_commit(2) == [[1, [1, 2]], [2, [3]]]
    assert w.pre_commit(3) == [[1, [1, 2]], [2, [3]]]  # nothing written: nothing pending added
    w.commit(1)
    assert w.visible == [1, 2] and sorted(w.pending) == [2]
    w.commit(5)
    assert w.visible == [1, 2, 3] and w.pending == {}


def test_restore_and_finish() -> None:
    w = ListWriter({0: [[4, ["a"]]]})
    assert w.visible == ["a"]
    w.write(["b"], None)
    w.finish()
    assert w.visible == ["a", "b"] and w.last_checkpoint_id == 0
