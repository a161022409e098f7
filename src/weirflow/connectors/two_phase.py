"""The two-phase-commit writer every exactly-once sink builds on.

One transaction covers the records a sink subtask writes between two
barriers. Its life cycle is :class:`TxnState`:

* ``OPEN``: records go into it (staged in memory, an open database or log
  transaction, in-progress files);
* ``PRE_COMMITTED``: on barrier ``n`` it is prepared; its **committable**
  (plain data naming what to commit) goes into checkpoint ``n``;
* ``COMMITTED``: checkpoint ``n`` completed and the output became visible;
* ``ABORTED``: it will never become visible.

Invariants:
    * at most one transaction is open, and it belongs to no checkpoint yet;
    * :attr:`TwoPhaseCommitWriter.pending` maps each checkpoint id to the one
      pre-committed transaction of that checkpoint, until it is committed;
    * commit is idempotent, so a restore commits the restored committables
      again and aborts whatever else the earlier attempts left (one restore
      path: :meth:`TwoPhaseCommitWriter.restore`).

The scheme is Flink's ``TwoPhaseCommitSinkFunction``, see also
``docs/architecture.md``, "Exactly-once output".

Every writer carries its connector's :class:`~weirflow.connectors.resilience.Guard`
(retries and circuit breaker) and, after a restore, its
:class:`~weirflow.connectors.resilience.StartupRamp`; the base applies the
ramp to every batch and reports the guard's state (:meth:`connector_stats`).
Which external calls go through :meth:`TwoPhaseCommitWriter._call_guarded` is
the subclass's choice, because only a call that is safe to run again may be
retried (a commit is, by the contract of :meth:`_commit`).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from weirflow.connectors.resilience import Guard, StartupRamp
from weirflow.errors import WeirflowError
from weirflow.metrics import ConnectorStats

C = TypeVar("C")
T = TypeVar("T")


class TxnState(enum.Enum):
    """Life cycle of one sink transaction (see the module docstring)."""

    OPEN = "open"
    PRE_COMMITTED = "pre-committed"
    COMMITTED = "committed"
    ABORTED = "aborted"


_ALLOWED: dict[TxnState, frozenset[TxnState]] = {
    TxnState.OPEN: frozenset({TxnState.PRE_COMMITTED, TxnState.ABORTED}),
    TxnState.PRE_COMMITTED: frozenset({TxnState.COMMITTED, TxnState.ABORTED}),
    TxnState.COMMITTED: frozenset(),
    TxnState.ABORTED: frozenset(),
}


class TransactionStateError(WeirflowError):
    """A sink transaction was asked for a transition its state does not allow (a bug)."""

    retriable = False


@dataclass
class Transaction(Generic[C]):
    """One sink transaction.

    Attributes:
        state: where it is in its life cycle.
        checkpoint_id: the checkpoint it was pre-committed for (``None`` while open).
        committable: what commits it, set by the pre-commit (``None`` while open).
    """

    state: TxnState = TxnState.OPEN
    checkpoint_id: int | None = None
    committable: C | None = None

    def to(self, state: TxnState) -> None:
        """Move to ``state``.

        Raises:
            TransactionStateError: the transition is not allowed.
        """
        if state not in _ALLOWED[self.state]:
            raise TransactionStateError(
                f"sink transaction of checkpoint {self.checkpoint_id}: "
                f"{self.state.value} -> {state.value} is not allowed"
            )
        self.state = state


class TwoPhaseCommitWriter(ABC, Generic[C]):
    """Base of the exactly-once sink writers (a :class:`~weirflow.connectors.SinkWriter`).

    Subclasses say how to stage records (:meth:`_write`), prepare
    (:meth:`_prepare`), commit (:meth:`_commit`) and restore
    (:meth:`_restore`); the base keeps the transaction states, the map of
    pending committables and the order of the steps.

    A writer built with ``exactly_once=False`` writes at least once: records
    go straight out (:meth:`_write_direct`), a barrier flushes
    (:meth:`_flush`) and nothing is pending.

    Args:
        exactly_once: whether records go through transactions.
        guard: the connector's retries and breaker (``None``: calls run once, unguarded).
        ramp: the write-rate ramp after a restore (``None``: full speed).

    Attributes:
        exactly_once: whether records go through transactions.
        pending: checkpoint id → its pre-committed transaction, not committed yet.
        last_checkpoint_id: the newest checkpoint pre-committed or restored (-1: none).
        guard: as given.
        rows_written: records made visible (committed, or written at least once).
        transactions: transactions ended in the external system (counted by subclasses).
        transaction_s: seconds spent ending them, retries included.
    """

    def __init__(
        self,
        *,
        exactly_once: bool = True,
        guard: Guard | None = None,
        ramp: StartupRamp | None = None,
    ) -> None:
        self.exactly_once = exactly_once
        self.pending: dict[int, Transaction[C]] = {}
        self.last_checkpoint_id = -1
        self.guard = guard
        self.rows_written = 0
        self.transactions = 0
        self.transaction_s = 0.0
        self._ramp = ramp
        self._txn: Transaction[C] | None = None

    # -- the SinkWriter interface -------------------------------------------

    def write(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """Stage a batch in the open transaction (opened on first use), or write it directly,
        at the startup ramp's pace after a restore.

        ``headers`` (one tuple per record) are given only to a subclass that stores
        them (a :class:`~weirflow.connectors.HeaderWriter`): its ``_write`` and
        ``_write_direct`` then take them as a third argument.
        """
        if self._ramp is not None:
            self._ramp.admit(len(values))
        args = (values, timestamps) if headers is None else (values, timestamps, headers)
        if not self.exactly_once:
            self._write_direct(*args)
            return
        if self._txn is None:
            self._begin()
            self._txn = Transaction()
        self._write(*args)

    def pre_commit(self, checkpoint_id: int) -> Any:
        """Barrier ``checkpoint_id``: prepare the open transaction as that checkpoint's.

        Steps: 1. settle what a restore left (:meth:`_settle`); 2. prepare the
        open transaction, if any, and keep it in :attr:`pending`; 3. return
        the checkpoint state naming every pending committable (:meth:`_state`).

        Returns:
            The writer's state for the checkpoint; ``None`` at least once
            (after :meth:`_flush`).
        """
        if not self.exactly_once:
            self._flush()
            return None
        self._settle()
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.checkpoint_id = checkpoint_id
            txn.committable = self._prepare(checkpoint_id)
            txn.to(TxnState.PRE_COMMITTED)
            self.pending[checkpoint_id] = txn
        self.last_checkpoint_id = max(self.last_checkpoint_id, checkpoint_id)
        return self._state(checkpoint_id, self.committables())

    def commit(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: commit every pending transaction up to it."""
        if not self.exactly_once:
            return
        self._settle()
        due = sorted(c for c in self.pending if c <= checkpoint_id)
        if not due:
            return
        self._commit(checkpoint_id, [(c, self.pending[c].committable) for c in due])  # type: ignore[misc]
        for c in due:
            self.pending.pop(c).to(TxnState.COMMITTED)

    def finish(self) -> None:
        """End of input without checkpoints: pre-commit and commit as the checkpoint after
        the last one seen, or flush at least once."""
        if not self.exactly_once:
            self._flush()
            return
        checkpoint_id = self.last_checkpoint_id + 1
        self.pre_commit(checkpoint_id)
        self.commit(checkpoint_id)

    def committables(self) -> list[tuple[int, C]]:
        """Return ``(checkpoint id, committable)`` of every pending transaction, oldest first."""
        return [(c, self.pending[c].committable) for c in sorted(self.pending)]  # type: ignore[misc]

    def restore(self, restored: Mapping[int, Any]) -> None:
        """Resolve what earlier attempts left: the one restore path of every subclass.

        Args:
            restored: old subtask → what its ``pre_commit`` returned at the
                restored checkpoint (empty on a fresh start).
        """
        self._restore(restored)

    def connector_stats(self) -> ConnectorStats | None:
        """Breaker state, retries by error class, rows written and transactions, or
        ``None`` for a writer without a guard. Safe to call from another thread (the
        dashboard reads it while the task may wait out an open breaker)."""
        if self.guard is None:
            return None
        return ConnectorStats(
            breaker=self.guard.state.value,
            retries=self.guard.retries_by_class(),
            rows_written=self.rows_written,
            transactions=self.transactions,
            transaction_s=self.transaction_s,
        )

    def _call_guarded(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` behind the guard (retried while retriable, refused while the breaker
        is open), or once without a guard. ``fn`` must be safe to run again after it failed.

        Raises:
            BreakerOpenError: the breaker stayed open through every attempt.
            Exception: what ``fn`` raised, when not retriable or out of attempts.
        """
        if self.guard is None:
            return fn()
        return self.guard.call(fn)

    # -- what subclasses provide --------------------------------------------

    def _begin(self) -> None:
        """Open a transaction for the next records (default: nothing to do)."""

    @abstractmethod
    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Stage records in the open transaction."""

    @abstractmethod
    def _prepare(self, checkpoint_id: int) -> C:
        """Prepare the open transaction for ``checkpoint_id``; return its committable."""

    @abstractmethod
    def _commit(self, checkpoint_id: int, due: list[tuple[int, C]]) -> None:
        """Checkpoint ``checkpoint_id`` completed: make the output of ``due``
        (``(checkpoint id, committable)``, oldest first, none newer) visible.

        Must be idempotent: a committable may be committed again after a restore.
        """

    @abstractmethod
    def _state(self, checkpoint_id: int, committables: list[tuple[int, C]]) -> Any:
        """Return the checkpoint state naming ``committables`` (plain data)."""

    @abstractmethod
    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Commit the restored committables again and abort every other leftover."""

    def _settle(self) -> None:
        """Finish restore work deferred to the first barrier or commit (default: none)."""

    def _write_direct(self, values: list[Any], timestamps: list[int] | None) -> None:
        """At least once: write records out now."""
        raise TransactionStateError(f"{type(self).__name__} has no at-least-once mode")

    def _flush(self) -> None:
        """At least once: make sure every record written so far is durable (default: none)."""


class StoresHeaders:
    """Makes a :class:`TwoPhaseCommitWriter` whose ``_write`` and ``_write_direct`` take
    headers as a third argument a :class:`~weirflow.connectors.HeaderWriter`."""

    def write_with_headers(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any]
    ) -> None:
        """Write records with their headers (tracing on; see ``TwoPhaseCommitWriter.write``)."""
        self.write(values, timestamps, headers)  # type: ignore[attr-defined]
