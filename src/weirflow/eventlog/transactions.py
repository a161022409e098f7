"""Transactional producers and the transaction state machine.

A transaction's records are staged in their own table, without offsets.
Commit moves them into the partition log in one SQLite transaction and only
then gives them offsets, so offsets stay dense (an aborted transaction
leaves no gap) and a read_committed read is a plain range read. This
differs from Kafka, which writes transactional records into the log at
once and hides them behind commit markers.

Fencing follows Kafka's transactional producer (KIP-98): registering a
``transactional_id`` bumps its epoch; every later call of an instance with
an older epoch raises :class:`ProducerFencedError`, and registering aborts
the id's *open* transactions. *Prepared* transactions survive fencing: they
belong to a checkpoint and are resolved by id with
``EventLog.commit_prepared`` / ``abort_prepared``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from enum import Enum, StrEnum

from weirflow.eventlog.catalog import Catalog
from weirflow.eventlog.db import Database
from weirflow.eventlog.errors import (
    InvalidArgumentError,
    ProducerFencedError,
    TransactionStateError,
    UnknownTransactionError,
)
from weirflow.eventlog.records import CommitsAfter, Record, TransactionHandle, encode_headers


class TxnState(StrEnum):
    """The stored state of one transaction."""

    OPEN = "open"
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


_TRANSITIONS: dict[TxnState, frozenset[TxnState]] = {
    TxnState.OPEN: frozenset({TxnState.PREPARED, TxnState.COMMITTED, TxnState.ABORTED}),
    TxnState.PREPARED: frozenset({TxnState.COMMITTED, TxnState.ABORTED}),
    TxnState.COMMITTED: frozenset(),
    TxnState.ABORTED: frozenset(),
}

_MOVE_TO_LOG = """
INSERT INTO records(topic_id, part, off, key, value, timestamp_ms, headers, append_ms, pos_end)
SELECT s.topic_id, s.part, p.next_offset - 1 + ROW_NUMBER() OVER w,
       s.key, s.value, s.timestamp_ms, s.headers, :now, p.end_pos + SUM(s.size) OVER w
FROM staged AS s JOIN partitions AS p ON p.topic_id = s.topic_id AND p.part = s.part
WHERE s.transactional_id = :tid AND s.sequence = :seq
WINDOW w AS (PARTITION BY s.topic_id, s.part ORDER BY s.seq ROWS UNBOUNDED PRECEDING)
"""
_ADVANCE_PARTITIONS = """
UPDATE partitions SET next_offset = next_offset + t.n, end_pos = end_pos + t.b
FROM (SELECT topic_id, part, COUNT(*) AS n, SUM(size) AS b FROM staged
      WHERE transactional_id = :tid AND sequence = :seq GROUP BY topic_id, part) AS t
WHERE partitions.topic_id = t.topic_id AND partitions.part = t.part
"""


def transition(current: TxnState, target: TxnState, what: str) -> bool:
    """Guard one state change of a stored transaction.

    Args:
        current: the stored state.
        target: the wanted state.
        what: names the transaction in the error message.

    Returns:
        ``True`` when the change must be made, ``False`` when the transaction
        is already in ``target`` (commit and abort are idempotent).

    Raises:
        TransactionStateError: the change is not allowed (commit after abort,
            abort after commit, prepare twice).
    """
    if current is target and target in (TxnState.COMMITTED, TxnState.ABORTED):
        return False
    if target not in _TRANSITIONS[current]:
        raise TransactionStateError(f"{what} is {current.value}; it cannot become {target.value}")
    return True


def finish(
    conn: sqlite3.Connection, tid: str, sequence: int, target: TxnState, now_ms: int
) -> None:
    """Move a transaction to ``target`` inside the caller's write transaction.

    Steps: 1. for COMMITTED, move the staged records into the partition log,
    giving them the next offsets of each partition in staging order, and
    advance the partitions' ends; 2. for COMMITTED and ABORTED, drop the
    staged records; 3. store the new state.
    """
    params = {"tid": tid, "seq": sequence, "now": now_ms}
    if target is TxnState.COMMITTED:
        conn.execute(_MOVE_TO_LOG, params)
        conn.execute(_ADVANCE_PARTITIONS, params)
    if target in (TxnState.COMMITTED, TxnState.ABORTED):
        conn.execute("DELETE FROM staged WHERE transactional_id = :tid AND sequence = :seq", params)
    conn.execute(
        "UPDATE transactions SET state = ?, updated_ms = ? WHERE transactional_id = ? "
        "AND sequence = ?",
        (target.value, now_ms, tid, sequence),
    )


def resolve_prepared(db: Database, handle: TransactionHandle, target: TxnState) -> None:
    """Commit or abort the prepared transaction ``handle`` names; idempotent.

    Raises:
        UnknownTransactionError: no transaction has this id, sequence and epoch.
        TransactionStateError: it is still open (never prepared), or it
            already reached the other final state.
    """
    what = f"transaction {handle.transactional_id!r} #{handle.sequence} (epoch {handle.epoch})"
    with db.write() as conn:
        row = conn.execute(
            "SELECT epoch, state FROM transactions WHERE transactional_id = ? AND sequence = ?",
            (handle.transactional_id, handle.sequence),
        ).fetchone()
        if row is None or row[0] != handle.epoch:
            raise UnknownTransactionError(f"{what}: no such transaction in {db.path}")
        current = TxnState(row[1])
        if current is TxnState.OPEN:
            raise TransactionStateError(f"{what} is open, not prepared")
        if transition(current, target, what):
            finish(conn, handle.transactional_id, handle.sequence, target, db.clock())


def list_prepared(db: Database, transactional_id: str) -> list[TransactionHandle]:
    """Return the prepared, unresolved transactions of ``transactional_id``, by sequence."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT epoch, sequence FROM transactions WHERE transactional_id = ? AND state = ? "
            "ORDER BY sequence",
            (transactional_id, TxnState.PREPARED.value),
        ).fetchall()
    return [TransactionHandle(transactional_id, epoch, seq) for epoch, seq in rows]


# Commits of checkpoints after k that were made after the last commit of a checkpoint up to
# k: a producer id reused by a job started afresh (checkpoint ids from 1 again) does not
# count the commits of the job's earlier runs.
_COMMITS_AFTER = """
SELECT MAX(m.checkpoint_id), COUNT(*), COALESCE(SUM(m.records), 0)
FROM transaction_marks AS m JOIN transactions AS t
  ON t.transactional_id = m.transactional_id AND t.sequence = m.sequence
WHERE m.transactional_id = :tid AND t.state = 'committed' AND m.checkpoint_id > :cid
  AND m.sequence > (
    SELECT COALESCE(MAX(m2.sequence), -1)
    FROM transaction_marks AS m2 JOIN transactions AS t2
      ON t2.transactional_id = m2.transactional_id AND t2.sequence = m2.sequence
    WHERE m2.transactional_id = :tid AND t2.state = 'committed' AND m2.checkpoint_id <= :cid)
"""


def commits_after(db: Database, transactional_id: str, checkpoint_id: int) -> CommitsAfter | None:
    """Return what ``transactional_id`` committed for checkpoints after ``checkpoint_id``.

    Only transactions prepared with a ``checkpoint_id`` count.

    Returns:
        Their summary, or ``None`` when there are none.
    """
    with db.read() as conn:
        newest, count, records = conn.execute(
            _COMMITS_AFTER, {"tid": transactional_id, "cid": checkpoint_id}
        ).fetchone()
    if not count:
        return None
    return CommitsAfter(transactional_id, newest, count, records)


class ProducerState(Enum):
    """The local state of a :class:`TransactionalProducer` instance."""

    READY = "ready"
    IN_TRANSACTION = "in_transaction"
    FENCED = "fenced"


class TransactionalProducer:
    """Appends records in transactions under one ``transactional_id``; built by
    ``EventLog.transactional_producer``.

    Registering bumps the id's epoch, fences every older instance and aborts
    their open transactions (prepared ones survive). One transaction is open
    at a time: ``begin``, any number of ``append``, then ``commit`` or
    ``abort``, or ``prepare`` to make it durable but invisible until
    ``EventLog.commit_prepared(handle)``.

    Args:
        db: the open database.
        catalog: topic lookup and routing.
        transactional_id: a non-empty id, stable across restarts of the same
            logical producer (e.g. a sink subtask).

    Raises:
        InvalidArgumentError: ``transactional_id`` is not a non-empty str.
        LogBusyError: the write lock was not obtained within the busy timeout.
    """

    def __init__(self, db: Database, catalog: Catalog, transactional_id: str) -> None:
        if type(transactional_id) is not str or not transactional_id:
            raise InvalidArgumentError(
                f"transactional_id must be a non-empty str, got {transactional_id!r}"
            )
        self._db = db
        self._catalog = catalog
        self.transactional_id = transactional_id
        self._state = ProducerState.READY
        self._sequence: int | None = None
        self.epoch = self._register()

    def _register(self) -> int:
        tid = self.transactional_id
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT epoch FROM producers WHERE transactional_id = ?", (tid,)
            ).fetchone()
            epoch = 0 if row is None else row[0] + 1
            conn.execute(
                "INSERT INTO producers(transactional_id, epoch, next_sequence) VALUES (?, ?, 0) "
                "ON CONFLICT(transactional_id) DO UPDATE SET epoch = excluded.epoch",
                (tid, epoch),
            )
            open_seqs = conn.execute(
                "SELECT sequence FROM transactions WHERE transactional_id = ? AND state = ?",
                (tid, TxnState.OPEN.value),
            ).fetchall()
            now = self._db.clock()
            for (seq,) in open_seqs:
                finish(conn, tid, seq, TxnState.ABORTED, now)
        return epoch

    def _check_epoch(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT epoch FROM producers WHERE transactional_id = ?", (self.transactional_id,)
        ).fetchone()
        if row is None or row[0] != self.epoch:
            self._state = ProducerState.FENCED
            raise ProducerFencedError(
                f"producer {self.transactional_id!r} epoch {self.epoch} was fenced by a newer "
                f"instance (epoch {row[0] if row else '?'})"
            )

    def _expect(self, state: ProducerState, call: str) -> None:
        if self._state is ProducerState.FENCED:
            raise ProducerFencedError(
                f"producer {self.transactional_id!r} epoch {self.epoch} was fenced; {call} refused"
            )
        if self._state is not state:
            # A zombie learns it was fenced before being told it misused the API.
            with self._db.read() as conn:
                self._check_epoch(conn)
            hint = (
                "call begin() first"
                if state is ProducerState.IN_TRANSACTION
                else "commit, abort or prepare the open transaction first"
            )
            raise TransactionStateError(
                f"producer {self.transactional_id!r}: {call} is not valid now; {hint}"
            )

    def begin(self) -> None:
        """Open a new transaction.

        Raises:
            TransactionStateError: a transaction is already open.
            ProducerFencedError: a newer instance registered the same id.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        self._expect(ProducerState.READY, "begin()")
        tid = self.transactional_id
        with self._db.write() as conn:
            self._check_epoch(conn)
            (seq,) = conn.execute(
                "UPDATE producers SET next_sequence = next_sequence + 1 "
                "WHERE transactional_id = ? RETURNING next_sequence - 1",
                (tid,),
            ).fetchone()
            conn.execute(
                "INSERT INTO transactions(transactional_id, sequence, epoch, state, updated_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (tid, seq, self.epoch, TxnState.OPEN.value, self._db.clock()),
            )
        self._sequence = seq
        self._state = ProducerState.IN_TRANSACTION

    def append(self, topic: str, records: Sequence[Record]) -> None:
        """Stage records in the open transaction; nobody reads them before commit.

        Partitions are chosen as by ``EventLog.append``; offsets are given at commit.

        Args:
            topic: the topic name.
            records: the records.

        Raises:
            TransactionStateError: no transaction is open.
            ProducerFencedError: a newer instance registered the same id.
            UnknownTopicError, PartitionOutOfRangeError, InvalidArgumentError: bad input;
                nothing was staged.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        self._expect(ProducerState.IN_TRANSACTION, "append()")
        info = self._catalog.get(topic)
        parts = self._catalog.route(info, records)
        tid, seq, topic_id = self.transactional_id, self._sequence, info.topic_id
        rows = []
        for r, p in zip(records, parts, strict=True):
            k, v = r.key, r.value
            hb = encode_headers(r.headers)
            if not isinstance(v, bytes | None) or type(r.timestamp_ms) is not int:
                raise InvalidArgumentError(
                    f"a record needs bytes-or-None value and int timestamp_ms, got {r!r}"
                )
            size = len(k or b"") + len(v or b"") + len(hb or b"")
            rows.append((tid, seq, topic_id, p, k, v, r.timestamp_ms, hb, size))
        with self._db.write() as conn:
            self._check_epoch(conn)
            conn.executemany(
                "INSERT INTO staged(transactional_id, sequence, topic_id, part, key, value, "
                "timestamp_ms, headers, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _end(self, target: TxnState, call: str, checkpoint_id: int | None = None) -> int:
        self._expect(ProducerState.IN_TRANSACTION, call)
        seq = self._sequence
        assert seq is not None
        with self._db.write() as conn:
            self._check_epoch(conn)
            if checkpoint_id is not None:
                conn.execute(
                    "INSERT INTO transaction_marks(transactional_id, sequence, checkpoint_id, "
                    "records) SELECT :tid, :seq, :cid, COUNT(*) FROM staged "
                    "WHERE transactional_id = :tid AND sequence = :seq",
                    {"tid": self.transactional_id, "seq": seq, "cid": checkpoint_id},
                )
            finish(conn, self.transactional_id, seq, target, self._db.clock())
        self._state = ProducerState.READY
        self._sequence = None
        return seq

    def prepare(self, checkpoint_id: int | None = None) -> TransactionHandle:
        """Make the open transaction durable but still invisible (the pre-commit).

        Args:
            checkpoint_id: the checkpoint whose committable the transaction
                becomes; stored with it, so that after a restore from an older
                checkpoint the sink can tell that this output was already
                committed (``EventLog.commits_after``). ``None`` stores nothing.

        Returns:
            The handle to pass to ``EventLog.commit_prepared`` or
            ``abort_prepared``, from this or any other process. The producer
            may ``begin`` the next transaction at once.

        Raises:
            TransactionStateError: no transaction is open.
            ProducerFencedError: a newer instance registered the same id.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        if checkpoint_id is not None and (type(checkpoint_id) is not int or checkpoint_id < 0):
            raise InvalidArgumentError(f"checkpoint_id must be an int >= 0, got {checkpoint_id!r}")
        seq = self._end(TxnState.PREPARED, "prepare()", checkpoint_id)
        return TransactionHandle(self.transactional_id, self.epoch, seq)

    def commit(self) -> None:
        """Commit the open transaction: its records get offsets and become visible, atomically.

        Raises:
            TransactionStateError: no transaction is open (a prepared one is
                committed with ``EventLog.commit_prepared``).
            ProducerFencedError: a newer instance registered the same id; the
                transaction was aborted by that registration.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        self._end(TxnState.COMMITTED, "commit()")

    def abort(self) -> None:
        """Abort the open transaction: its records are dropped and never visible.

        Raises:
            TransactionStateError: no transaction is open.
            ProducerFencedError: a newer instance registered the same id.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        self._end(TxnState.ABORTED, "abort()")
