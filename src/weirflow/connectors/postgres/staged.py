"""The ``transactional`` (and ``at_least_once``) writer of
:class:`~weirflow.connectors.PostgresSink`: rows staged in the checkpoint, written with a
progress row in one transaction when the checkpoint completes."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
from psycopg import errors as pg_errors

from weirflow.connectors.postgres.errors import (
    PostgresSinkError,
    RowRejectedError,
    is_content_error,
)
from weirflow.connectors.postgres.stream import IntervalStream
from weirflow.connectors.postgres.tables import RowStatements
from weirflow.connectors.postgres.writers import (
    STATE_VERSION,
    PostgresWriter,
    Row,
    WriterIdentity,
    last_committed,
    prune_progress,
    record_progress,
    run_token,
)
from weirflow.connectors.two_phase import TransactionStateError
from weirflow.errors import ConfigError

if TYPE_CHECKING:
    from weirflow.connectors.postgres.sink import PostgresSink

log = logging.getLogger("weirflow.connectors.postgres")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[list[Any]])
#: Longest wait (ms) of a row written beside a held transaction: any wait there is most
#: likely for that transaction, which only the waiting thread can end.
BESIDE_HELD_LOCK_TIMEOUT_MS = 200


class StagedWriter(PostgresWriter):
    """``transactional`` exactly-once (rows staged in the checkpoint, written on completion),
    or ``at_least_once`` (rows written as they come). A committable is the interval's rows
    as one msgpack blob."""

    def __init__(
        self,
        sink: PostgresSink,
        me: WriterIdentity,
        name: str,
        conn: psycopg.Connection[Any],
        statements: RowStatements,
        restored: Mapping[int, Any] | None,
    ) -> None:
        super().__init__(
            sink,
            me,
            name,
            conn,
            statements,
            exactly_once=sink.guarantee == "exactly_once",
            restarted=restored is not None,
        )
        restored = restored or {}
        self.run = run_token(restored, me.subtask)
        self._current: list[Row] = []
        # checkpoint id -> (connection holding its written, uncommitted transaction, rows)
        self._held: dict[int, tuple[psycopg.Connection[Any], int]] = {}
        # the connection whose open transaction holds ``_current``, written at the end of
        # input, that the next checkpoint adds its progress row to (``None``: unwritten)
        self._written: psycopg.Connection[Any] | None = None
        if self.exactly_once:
            self.restore(restored)

    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Write the restored staged rows of every old subtask that its progress rows do
        not show committed; route again the dead letters of those that were."""
        for old, state in sorted(restored.items()):
            if not state:
                continue
            if state.get("version") != STATE_VERSION:
                raise ConfigError(f"unknown PostgresSink state version {state.get('version')!r}")
            self._write_checkpoints(self.me.of(old), state["run"], state["staged"])

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        if self._written is not None:
            raise TransactionStateError(f"{self.name}: rows written after the end of input")
        rows = self.encode_rows(values)
        self._current.extend(rows)
        if self._stream is not None:
            self._send(rows)
        elif self._can_stream():
            self._send(self._current)

    def _can_stream(self) -> bool:
        """Whether to open a stream now: append mode, no stream failed in this interval,
        the breaker closed, and no earlier checkpoint pending unless the table has nothing
        a row could wait on (:attr:`RowStatements.rows_may_wait
        <weirflow.connectors.postgres.tables.RowStatements.rows_may_wait>`): a
        transaction held for a pending checkpoint keeps its locks until this thread
        commits it. (A pending checkpoint whose rows are written at its commit takes the
        data connection from the stream: :meth:`_write_checkpoints`.)"""
        return self._stream_allowed() and (not self.pending or not self.statements.rows_may_wait)

    def _write_held(
        self, checkpoint_id: int | None, rows: list[Row]
    ) -> tuple[psycopg.Connection[Any], list[tuple[int, RowRejectedError]]] | None:
        """Write ``rows`` into a transaction held open (:meth:`_hold`), behind the guard.

        Beside a transaction still held for an earlier checkpoint (max_concurrent > 1,
        or the end of input before the last checkpoint completed) a row could wait for
        that one's locks, which only this thread can release: there the write runs under
        a lock timeout of ``BESIDE_HELD_LOCK_TIMEOUT_MS``, and a row that would wait
        rolls it back.

        Returns:
            The connection holding the transaction and the refused rows; ``None`` when a
            row would have waited (the rows stay unwritten until that checkpoint
            completes, and are then written at their own checkpoint's commit).
        """
        beside = bool(self._held) and self.statements.rows_may_wait

        def write(conn: psycopg.Connection[Any]) -> Any:
            try:
                return self._hold(conn, checkpoint_id, rows, beside_held=beside)
            except pg_errors.LockNotAvailable:
                log.info("%s: rows would wait for a held transaction; written later", self.name)
                return None

        return self._guarded("write rows", write)

    def _send(self, rows: list[Row]) -> None:
        """Stream ``rows``; without a stream, open one and send ``rows``, then the whole
        interval so far. On a failure drop the stream for the rest of the interval: its
        rows are buffered anyway, and the barrier writes them."""
        stream = self._stream
        try:
            if stream is None:
                conn = self.connection()
                conn.execute("BEGIN")
                stream = self._stream = IntervalStream(conn, self.statements)
            with self._deadline.armed(stream.conn):
                stream.write(rows)
        except psycopg.Error as e:
            log.info("%s: streaming failed (%s); the barrier writes the rows", self.name, e)
            self._stream_failed = True
            self._drop_stream()

    def _finish_stream(
        self, checkpoint_id: int | None, rows: list[Row]
    ) -> tuple[psycopg.Connection[Any], list[tuple[int, RowRejectedError]]] | None:
        """End the interval's stream, once and unguarded, into a transaction held like
        :meth:`_hold`'s: rows the table refuses are written again row by row, set aside,
        and the progress row of ``checkpoint_id`` (if given) added.

        Returns:
            The connection holding the transaction and the refused rows; ``None`` when the
            stream failed (dropped: the caller writes ``rows`` as if never streamed).
        """
        stream, self._stream = self._stream, None
        self._stream_failed = False
        if stream is None:
            return None
        if stream.rows != len(rows):
            raise TransactionStateError(
                f"{self.name}: {stream.rows} rows streamed for an interval of {len(rows)}"
            )
        conn = stream.conn
        try:
            with self._deadline.armed(conn):
                bad = [] if stream.finish() else self.statements.write(conn, rows)
                if checkpoint_id is not None:
                    record_progress(conn, self.me, self.run, checkpoint_id, len(rows) - len(bad))
        except psycopg.Error as e:
            log.info("%s: the streamed rows failed (%s); writing them again", self.name, e)
            self._drop_connection(False)
            return None
        self._conns[False] = None
        return conn, bad

    def _write_pending(self) -> None:
        """Write the interval's rows into a transaction held open for the next checkpoint,
        without its progress row (the checkpoint id is not known yet), and set the refused
        rows aside. When a row would wait for a transaction still held for an earlier
        checkpoint (:meth:`_write_held`), the rows stay unwritten."""
        if not self._current or self._written is not None:
            return
        rows = self._current
        streamed = self._finish_stream(None, rows)
        if streamed is None:
            streamed = self._write_held(None, rows)
        if streamed is None:
            return
        self._written, bad = streamed
        self._current = self._accepted(rows, bad)

    def _prepare(self, checkpoint_id: int) -> bytes:
        """The interval's rows as one msgpack blob: the checkpoint stores one bytes value
        instead of walking every row.

        Steps: 1. add the progress row of ``checkpoint_id`` to the transaction
        written at the end of input, if any (:meth:`_write_pending`); 2. else
        write the rows and the progress row in a transaction, and dead-letter
        (now, before the barrier goes on, so the dead letters belong to this
        checkpoint) the rows the table refuses for their content; either
        transaction is held open until the checkpoint completes
        (:meth:`_commit`); 3. stage the rows written.

        Raises:
            ConfigError: a value msgpack cannot hold (the message names its type).
        """
        staged, self._current = self._current, []
        written, self._written = self._written, None
        if written is not None and not self._add_progress(written, checkpoint_id, len(staged)):
            written = None
        streamed = self._finish_stream(checkpoint_id, staged) if written is None else None
        if streamed is not None:
            written, bad = streamed
            staged = self._accepted(staged, bad)
        # rows that would wait for a transaction held for an earlier checkpoint are
        # staged unwritten, and written when this checkpoint completes (_write_held)
        held = self._write_held(checkpoint_id, staged) if staged and written is None else None
        if held is not None:
            written, bad = held
            staged = self._accepted(staged, bad)
        if written is not None:
            self._held[checkpoint_id] = (written, len(staged))
        try:
            return _encoder.encode(staged)
        except (TypeError, msgspec.EncodeError) as e:
            raise ConfigError(
                f"{self.name}: a row value cannot be staged in the checkpoint: {e}; encode= "
                "it to str, int, float, bytes, datetime, Decimal or UUID"
            ) from e

    def _hold(
        self,
        conn: psycopg.Connection[Any],
        checkpoint_id: int | None,
        rows: list[Row],
        beside_held: bool = False,
    ) -> tuple[psycopg.Connection[Any], list[tuple[int, RowRejectedError]]]:
        """Open a transaction on ``conn``, write ``rows`` and the progress row of
        ``checkpoint_id`` (if given) into it, and take ``conn`` out of the writer's hands
        (the next call opens another connection), so that a later interval can be written
        while this one waits for its checkpoint. With ``beside_held``, under a lock
        timeout of ``BESIDE_HELD_LOCK_TIMEOUT_MS``.

        Returns:
            The connection holding the open transaction, and the refused rows.

        Raises:
            psycopg.errors.LockNotAvailable: with ``beside_held``, a row waited too long
                (the transaction is rolled back).
        """
        conn.execute("BEGIN")
        try:
            if beside_held:
                conn.execute(f"SET LOCAL lock_timeout = {BESIDE_HELD_LOCK_TIMEOUT_MS}")
            bad = self.statements.write(conn, rows)
            if checkpoint_id is not None:
                record_progress(conn, self.me, self.run, checkpoint_id, len(rows) - len(bad))
        except BaseException:
            if not conn.broken:
                conn.execute("ROLLBACK")
            raise
        self._conns[False] = None
        return conn, bad

    def _state(self, checkpoint_id: int, committables: list[tuple[int, Any]]) -> Any:
        """``{"version", "run", "staged": [[checkpoint_id, msgpack rows], ...]}``."""
        return {
            "version": STATE_VERSION,
            "run": self.run,
            "staged": [[c, rows] for c, rows in committables if rows],
        }

    def _commit(self, checkpoint_id: int, due: list[tuple[int, Any]]) -> None:
        """Commit the held transactions of ``due``; a checkpoint whose transaction is not
        held (restored) or did not commit (a broken link) is written again from its staged
        rows (:meth:`_write_checkpoints`).

        Raises:
            PostgresSinkError: (retriable) the table refused rows of a checkpoint written
                again (a key another writer took meanwhile). They are committed in
                ``weirflow_sink_rejects``, not dead-lettered now: after a job's final
                checkpoint no checkpoint would carry their dead letters, so the job
                fails, and its restore from this checkpoint dead-letters them again.
        """
        refused = 0
        for c, blob in due:
            held = self._held.pop(c, None)
            if held is None or not self._commit_held(*held):
                refused += self._write_checkpoints(self.me, self.run, [(c, blob)], route=False)
        # on the data connection when no stream holds it: the one just committed is idle
        # there, or the next interval needs a new one anyway
        self._guarded(
            "prune progress",
            lambda conn: prune_progress(conn, self.me, self.run, due[-1][0]),
            admin=self._stream is not None,
        )
        if refused:
            raise PostgresSinkError(
                f"{self.name}: {self.sink.where()} refused {refused} row(s) when checkpoint "
                f"{checkpoint_id} committed; they are recorded in weirflow_sink_rejects and "
                "are dead-lettered when the job restores this checkpoint",
                retriable=True,
            )

    def _add_progress(self, conn: psycopg.Connection[Any], checkpoint_id: int, rows: int) -> bool:
        """Add the progress row of ``checkpoint_id`` to the transaction written at the end
        of input, once and unguarded; ``False`` when that failed (the connection is closed,
        its transaction gone, and the caller writes the rows again)."""
        try:
            with self._deadline.armed(conn):
                record_progress(conn, self.me, self.run, checkpoint_id, rows)
            return True
        except psycopg.Error as e:
            log.info("%s: the transaction written at the end of input broke (%s)", self.name, e)
            conn.close()
            return False

    def _commit_held(self, conn: psycopg.Connection[Any], rows: int) -> bool:
        """``COMMIT`` a held transaction, once and unguarded; ``False`` when it failed (the
        caller writes the checkpoint again, which finds it committed if it was)."""
        start = time.perf_counter()
        try:
            with self._deadline.armed(conn):
                conn.execute("COMMIT")
        except psycopg.Error as e:
            log.info("%s: commit of a held transaction failed (%s); writing again", self.name, e)
            return False
        finally:
            self._release(conn)
        self.transactions += 1
        self.transaction_s += time.perf_counter() - start
        self.rows_written += rows
        return True

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        """Give a connection back as the data connection, or close it when one is open."""
        idle = psycopg.pq.TransactionStatus.IDLE
        if self._conns[False] is None and not conn.closed and conn.info.transaction_status == idle:
            self._conns[False] = conn
            return
        conn.close()

    def close(self) -> None:
        """Close every connection; the held transactions are rolled back by the server."""
        for conn, _ in self._held.values():
            conn.close()
        self._held.clear()
        if self._written is not None:
            self._written.close()
            self._written = None
        super().close()

    def _write_checkpoints(
        self, who: WriterIdentity, run: str, staged: Sequence[Sequence[Any]], route: bool = True
    ) -> int:
        """Write the rows of ``staged`` not yet committed, with their progress row, in one
        transaction.

        Steps: 1. read the newest committed checkpoint of ``who``/``run``;
        2. write the rows of the newer checkpoints, recording refused rows in
        ``weirflow_sink_rejects``; 3. insert the progress row; 4. commit;
        5. with ``route``, dead-letter the refused rows, and those recorded
        for the checkpoints that were already committed (their dead letters
        were routed after the restored checkpoint, so they are not in it).

        Returns:
            The number of refused rows (new and recorded).
        """

        due = [(int(c), _decoder.decode(blob)) for c, blob in staged]
        due = [(c, rows) for c, rows in due if rows]
        if not due:
            return 0
        if self._stream is not None:
            # the stream holds the data connection; its rows stay buffered for the barrier
            self._stream_failed = True
            self._drop_stream()

        def txn(conn: psycopg.Connection[Any]) -> tuple[list[Any], int]:
            refused: list[tuple[Sequence[Row], list[tuple[int, RowRejectedError]]]] = []
            written = 0
            with conn.transaction():
                done = last_committed(conn, who, run)
                for c, rows in due:
                    if c <= done:
                        refused.append((rows, self._recorded_rejects(conn, who, run, c)))
                        continue
                    bad = self.statements.write(conn, rows)
                    for i, err in bad:
                        conn.execute(
                            "INSERT INTO weirflow_sink_rejects VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                            (*who.key(), run, c, i, err.sqlstate, str(err)),
                        )
                    refused.append((rows, bad))
                    written += len(rows) - len(bad)
                newest = due[-1][0]
                if newest > done:
                    record_progress(conn, who, run, newest, written)
                    prune_progress(conn, who, run, newest)
            return refused, written

        refused, written = self._guarded("commit", txn, ends_transaction=True)
        self.rows_written += written
        if route:
            for rows, bad in refused:
                self._reject(rows, bad)
        return sum(len(bad) for _, bad in refused)

    @staticmethod
    def _recorded_rejects(
        conn: psycopg.Connection[Any], who: WriterIdentity, run: str, checkpoint_id: int
    ) -> list[tuple[int, RowRejectedError]]:
        rows = conn.execute(
            "SELECT row_index, sqlstate, message FROM weirflow_sink_rejects WHERE job = %s "
            "AND sink = %s AND subtask = %s AND run = %s AND checkpoint_id = %s ORDER BY 1",
            (*who.key(), run, checkpoint_id),
        ).fetchall()
        return [(int(i), RowRejectedError(m, sqlstate=s)) for i, s, m in rows]

    def _write_direct(self, values: list[Any], timestamps: list[int] | None) -> None:
        """At least once: write the batch in its own transaction now (buffering rows for
        larger statements would hold them back for as long as no more input comes); the
        transaction is tried without savepoints first, since rows are seldom refused."""
        rows = self.encode_rows(values)

        def txn(conn: psycopg.Connection[Any]) -> list[tuple[int, RowRejectedError]]:
            try:
                with conn.transaction():
                    self.statements.write_all_or_none(conn, rows)
                return []
            except psycopg.Error as e:
                if not is_content_error(e):
                    raise
            with conn.transaction():
                return self.statements.write(conn, rows)

        bad = self._guarded("write", txn, ends_transaction=True)
        self.rows_written += len(rows) - len(bad)
        self._reject(rows, bad)
