"""The ``two_phase`` writer of :class:`~weirflow.connectors.PostgresSink`: one database
transaction per checkpoint interval, prepared on the barrier and committed on completion,
fenced by a per-subtask epoch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from weirflow.connectors.postgres.errors import (
    PostgresFencedError,
    PostgresSinkError,
    RowRejectedError,
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


def _gid_sql(verb: str, gid: str) -> sql.Composed:
    """``<verb> '<gid>'`` (``PREPARE TRANSACTION``, ``COMMIT PREPARED``, ``ROLLBACK PREPARED``)."""
    return sql.SQL(verb + " {}").format(sql.Literal(gid))


class PreparedWriter(PostgresWriter):
    """``two_phase`` exactly-once: a committable is a prepared transaction's id."""

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
            sink, me, name, conn, statements, exactly_once=True, restarted=restored is not None
        )
        restored = restored or {}
        self.run = run_token(restored, me.subtask)
        self.epoch = 0
        # rows the open transaction holds (written again into a new one after a broken link)
        self._interval: list[Row] = []
        # rows not written yet, or streamed and not yet taken by the server
        self._buffer: list[Row] = []
        self._in_txn = False
        self.restore(restored)

    # -- restore and fencing ------------------------------------------------

    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Steps: 1. commit the restored prepared transactions (or find them committed);
        2. roll back every other prepared transaction of this and the restored
        subtasks; 3. take a new epoch, fencing every earlier writer."""
        keep: set[str] = set()
        owned = {self.me.subtask}
        for old, state in sorted(restored.items()):
            if not state:
                continue
            if state.get("version") != STATE_VERSION:
                raise ConfigError(f"unknown PostgresSink state version {state.get('version')!r}")
            owned.add(old)
            for c, gid in state["prepared"]:
                keep.add(gid)
                self._commit_prepared(self.me.of(old), state["run"], int(c), gid)
        self.epoch = self._guarded("fence", lambda conn: self._fence(conn, owned, keep), admin=True)

    def _strays(self, conn: psycopg.Connection[Any], owned: set[int], keep: set[str]) -> int:
        prefixes = [f"{self.me.gid_prefix}{s}:%" for s in sorted(owned)]
        gids = conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE ANY(%s)", (prefixes,)
        ).fetchall()
        stray = [g for (g,) in gids if g not in keep]
        for gid in stray:
            log.info(
                "%s: rolling back prepared transaction %s (no completed checkpoint)", self.name, gid
            )
            with contextlib.suppress(pg_errors.UndefinedObject):  # resolved meanwhile
                conn.execute(_gid_sql("ROLLBACK PREPARED", gid))
        return len(stray)

    def _fence(self, conn: psycopg.Connection[Any], owned: set[int], keep: set[str]) -> int:
        """Roll back stray prepared transactions, then bump the epoch of every owned subtask.

        A zombie's prepared transaction holds a share lock on its fence row, so
        the bump waits for it; on a lock timeout the strays are rolled back again.

        Returns:
            This writer's epoch.
        """
        for _ in range(50):
            self._strays(conn, owned, keep)
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '1s'")
                    epoch = 0
                    for s in sorted(owned):
                        row = conn.execute(
                            "INSERT INTO weirflow_sink_fence VALUES (%s, %s, %s, 1) "
                            "ON CONFLICT (job, sink, subtask) DO UPDATE "
                            "SET epoch = weirflow_sink_fence.epoch + 1 RETURNING epoch",
                            self.me.of(s).key(),
                        ).fetchone()
                        assert row is not None
                        if s == self.me.subtask:
                            epoch = int(row[0])
                    return epoch
            except pg_errors.LockNotAvailable:
                continue
        raise PostgresSinkError(f"{self.name}: could not fence earlier writers (locks held)")

    # -- the transaction of one interval ---------------------------------------

    def _open_txn(self, conn: psycopg.Connection[Any]) -> None:
        """``BEGIN``, check the epoch, write the interval's rows again (after a broken link)."""
        conn.execute("BEGIN")
        row = conn.execute(
            "SELECT epoch FROM weirflow_sink_fence WHERE job = %s AND sink = %s AND subtask = %s "
            "FOR SHARE",
            self.me.key(),
        ).fetchone()
        if row is None or int(row[0]) != self.epoch:
            conn.execute("ROLLBACK")
            raise PostgresFencedError(
                f"{self.name}: fenced: a newer writer (epoch {row and row[0]}) took over from "
                f"epoch {self.epoch}"
            )
        if self._interval:
            # the rolled-back transaction no longer held the interval's keys: another
            # writer may have taken one, and that row is refused now
            self._interval = self._accepted(
                self._interval, self.statements.write(conn, self._interval)
            )
        self._in_txn = True

    def _in_live_txn(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether ``conn`` holds this interval's open transaction; a failed or foreign
        one (after a serialization failure, say) is rolled back."""
        status = conn.info.transaction_status
        if self._in_txn and status == psycopg.pq.TransactionStatus.INTRANS:
            return True
        self._in_txn = False
        if status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        return False

    def _live(self, conn: psycopg.Connection[Any]) -> None:
        if not self._in_live_txn(conn):
            self._open_txn(conn)

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Buffer the rows and stream them into the open transaction; without a stream,
        write them once ``batch_size`` rows are buffered (one statement instead of one per
        engine batch)."""
        rows = self.encode_rows(values)
        self._buffer.extend(rows)
        if self._stream is not None:
            self._send(rows)
        elif self._stream_allowed():
            self._send(self._buffer)
        elif len(self._buffer) >= self.statements.batch_size:
            self._write_pending()

    def _send(self, rows: list[Row]) -> None:
        """Stream ``rows``; without a stream, open the interval's transaction (as
        :meth:`_live`) and a stream in it, and send ``rows``. Once and unguarded: on a
        failure the connection is dropped, with the transaction, and the buffered rows
        are written in statements for the rest of the interval.

        Raises:
            PostgresFencedError: a newer writer took over.
        """
        try:
            if self._stream is None:
                conn = self.connection()
                with self._deadline.armed(conn):
                    self._live(conn)
                    self._stream = IntervalStream(conn, self.statements)
            with self._deadline.armed(self._stream.conn):
                self._stream.write(rows)
        except psycopg.Error as e:
            log.info("%s: streaming failed (%s); writing the rows in statements", self.name, e)
            self._stream_failed = True
            self._in_txn = False
            self._drop_stream()

    def _finish_stream(self) -> None:
        """End the stream, once and unguarded: the rows the server took join the
        interval. When a row's content was refused, the transaction is back at its
        savepoint and the rows stay buffered, for :meth:`statements.write
        <weirflow.connectors.postgres.tables.RowStatements.write>` to set it aside; on
        any other failure the connection is dropped, with the transaction."""
        stream, self._stream = self._stream, None
        self._stream_failed = False
        if stream is None:
            return
        if stream.rows != len(self._buffer):
            raise TransactionStateError(
                f"{self.name}: {stream.rows} rows streamed for {len(self._buffer)} buffered"
            )
        try:
            with self._deadline.armed(stream.conn):
                taken = stream.finish()
        except psycopg.Error as e:
            log.info("%s: the streamed rows failed (%s); writing them again", self.name, e)
            self._in_txn = False
            self._drop_connection(False)
            return
        if taken:
            # the interval is mostly one stream: take its list over instead of copying it
            if self._interval:
                self._interval.extend(self._buffer)
            else:
                self._interval = self._buffer
            self._buffer = []

    def _write_pending(self) -> None:
        """End the stream, then write the rows still buffered into the open transaction;
        the refused ones are set aside and left out of the interval."""
        self._finish_stream()
        rows, self._buffer = self._buffer, []
        if not rows:
            return

        def write(conn: psycopg.Connection[Any]) -> list[tuple[int, RowRejectedError]]:
            try:
                self._live(conn)
                return self.statements.write(conn, rows)
            except BaseException:
                self._in_txn = False
                raise

        bad = self._guarded("write", write)
        self._interval.extend(self._accepted(rows, bad))

    def _prepare(self, checkpoint_id: int) -> str:
        self._write_pending()
        gid = self.me.gid(self.epoch, checkpoint_id)
        rows = len(self._interval)

        def prepare(conn: psycopg.Connection[Any]) -> None:
            if not self._in_live_txn(conn) and self._prepared(conn, gid):
                return  # PREPARE went through before the link broke
            try:
                self._live(conn)
                record_progress(conn, self.me, self.run, checkpoint_id, rows)
                conn.execute(_gid_sql("PREPARE TRANSACTION", gid))
            finally:
                self._in_txn = False

        self._guarded("prepare", prepare, ends_transaction=True)
        self._interval = []
        return gid

    @staticmethod
    def _prepared(conn: psycopg.Connection[Any], gid: str) -> bool:
        row = conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone()
        return row is not None

    def _commit_prepared(self, who: WriterIdentity, run: str, checkpoint_id: int, gid: str) -> None:
        """``COMMIT PREPARED gid``; a transaction already gone must show in the progress rows.

        Raises:
            PostgresSinkError: it is gone and was never committed (its rows are lost).
        """

        def commit(conn: psycopg.Connection[Any]) -> None:
            try:
                conn.execute(_gid_sql("COMMIT PREPARED", gid))
                return
            except pg_errors.UndefinedObject:
                pass
            if last_committed(conn, who, run) < checkpoint_id:
                raise PostgresSinkError(
                    f"{self.name}: prepared transaction {gid} of completed checkpoint "
                    f"{checkpoint_id} is gone and was never committed (rolled back by hand?): "
                    "its rows are lost"
                )

        self._guarded("commit prepared", commit, admin=True)

    def _commit(self, checkpoint_id: int, due: list[tuple[int, Any]]) -> None:
        for c, gid in due:
            self._commit_prepared(self.me, self.run, c, gid)
        self._guarded(
            "prune progress",
            lambda conn: prune_progress(conn, self.me, self.run, due[-1][0]),
            admin=True,
        )

    def _state(self, checkpoint_id: int, committables: list[tuple[int, Any]]) -> Any:
        """``{"version", "run", "prepared": [[checkpoint_id, gid], ...]}``."""
        return {"version": STATE_VERSION, "run": self.run, "prepared": committables}
