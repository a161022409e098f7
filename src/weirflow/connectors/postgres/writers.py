"""The two sink writers of :class:`~weirflow.connectors.PostgresSink`.

:class:`StagedWriter` (``transactional``, and ``at_least_once``) and
:class:`PreparedWriter` (``two_phase``); ``sink.py`` says when each is used.
Every database call runs through the sink's :class:`~weirflow.connectors.Resilience`
guard, and every transaction is written so that running it again after an
unanswered ``COMMIT`` (the link broke after the server committed) changes
nothing: it first reads what the progress table already holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from weirflow.connectors.base import RejectedRecord
from weirflow.connectors.postgres.errors import (
    PostgresFencedError,
    PostgresSinkError,
    RowRejectedError,
    is_transient,
)
from weirflow.connectors.postgres.tables import RowStatements
from weirflow.connectors.two_phase import TwoPhaseCommitWriter
from weirflow.errors import ConfigError
from weirflow.metrics import ConnectorStats

if TYPE_CHECKING:
    from weirflow.connectors.postgres.sink import PostgresSink

log = logging.getLogger("weirflow.connectors.postgres")

STATE_VERSION = 1
Row = list[Any]


@dataclass(frozen=True)
class WriterIdentity:
    """Who writes: one sink subtask of one job.

    Attributes:
        job, sink, subtask: the keys of its progress and fence rows.
        gid_prefix: the prefix of the sink's prepared-transaction ids (``wf:<digest>:``).
    """

    job: str
    sink: str
    subtask: int
    gid_prefix: str

    def of(self, subtask: int) -> WriterIdentity:
        """The same sink's identity for another subtask (a restored old one)."""
        return WriterIdentity(self.job, self.sink, subtask, self.gid_prefix)

    def gid(self, epoch: int, checkpoint_id: int) -> str:
        """The prepared-transaction id of ``checkpoint_id`` written at ``epoch``."""
        return f"{self.gid_prefix}{self.subtask}:{epoch}:{checkpoint_id}"

    def key(self) -> tuple[str, str, int]:
        """``(job, sink, subtask)`` for queries."""
        return (self.job, self.sink, self.subtask)


def last_committed(conn: psycopg.Connection[Any], who: WriterIdentity, run: str) -> int:
    """The newest checkpoint id ``who`` committed in run ``run`` (-1 when none)."""
    row = conn.execute(
        "SELECT max(checkpoint_id) FROM weirflow_sink_progress "
        "WHERE job = %s AND sink = %s AND subtask = %s AND run = %s",
        (*who.key(), run),
    ).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def _record_progress(
    conn: psycopg.Connection[Any], who: WriterIdentity, run: str, checkpoint_id: int, rows: int
) -> None:
    """Insert the progress row of ``checkpoint_id``."""
    conn.execute(
        "INSERT INTO weirflow_sink_progress (job, sink, subtask, run, checkpoint_id, rows) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (*who.key(), run, checkpoint_id, rows),
    )


def _prune_progress(
    conn: psycopg.Connection[Any], who: WriterIdentity, run: str, checkpoint_id: int
) -> None:
    """Delete the progress rows of ``who``/``run`` older than ``checkpoint_id``.

    Never inside a transaction to be prepared: it would lock rows that the
    next interval's transaction deletes too, and wait for a commit that only
    this writer's own thread can make.
    """
    conn.execute(
        "DELETE FROM weirflow_sink_progress WHERE job = %s AND sink = %s AND subtask = %s "
        "AND run = %s AND checkpoint_id < %s",
        (*who.key(), run, checkpoint_id),
    )


def _gid_sql(verb: str, gid: str) -> sql.Composed:
    """``<verb> '<gid>'`` (``PREPARE TRANSACTION``, ``COMMIT PREPARED``, ``ROLLBACK PREPARED``)."""
    return sql.SQL(verb + " {}").format(sql.Literal(gid))


class _PostgresWriter(TwoPhaseCommitWriter[Any]):
    """What both writers share: the connection, row encoding, the guard, dead letters.

    Attributes:
        rows_written: rows that reached the table (committed).
        rejected_by_sqlstate: SQLSTATE → rows dead-lettered.
    """

    def __init__(
        self,
        sink: PostgresSink,
        me: WriterIdentity,
        name: str,
        conn: psycopg.Connection[Any],
        statements: RowStatements,
        *,
        exactly_once: bool,
    ) -> None:
        super().__init__(exactly_once=exactly_once)
        self.sink = sink
        self.me = me
        self.name = name
        self.statements = statements
        self.guard = sink.resilience.guard(name, is_transient)
        self.rows_written = 0
        self.rejected_by_sqlstate: Counter[str] = Counter()
        self._conns: dict[bool, psycopg.Connection[Any] | None] = {False: conn, True: None}
        self._rejected: list[RejectedRecord] = []

    # -- connection ---------------------------------------------------------

    def connection(self, admin: bool = False) -> psycopg.Connection[Any]:
        """The open data connection, or the admin one (outside the data connection's
        transaction: ``COMMIT PREPARED`` and fencing); a new one when the last broke."""
        conn = self._conns[admin]
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._conns[admin] = self.sink.connect()
        return conn

    def _drop_connection(self, admin: bool) -> None:
        conn, self._conns[admin] = self._conns[admin], None
        if conn is not None:
            conn.close()

    # -- rows ---------------------------------------------------------------

    def encode_rows(self, values: list[Any]) -> list[Row]:
        """Turn records into rows in column order.

        Raises:
            ConfigError: a record has fields outside the columns, or the wrong length.
        """
        encode = self.sink.encode
        columns = self.statements.columns
        out = []
        for v in values:
            row = encode(v) if encode is not None else v
            if isinstance(row, Mapping):
                extra = set(row) - set(columns)
                if extra:
                    raise ConfigError(
                        f"{self.name}: record has fields {sorted(map(str, extra))} that "
                        f"{self.sink.where()} has no column for; its columns are "
                        f"{list(columns)}"
                    )
                out.append([row.get(c) for c in columns])
            elif isinstance(row, Sequence) and not isinstance(row, str | bytes):
                if len(row) != len(columns):
                    raise ConfigError(
                        f"{self.name}: row of {len(row)} values for the {len(columns)} columns "
                        f"{list(columns)}; fix encode= or columns="
                    )
                out.append(list(row))
            else:
                raise ConfigError(
                    f"{self.name}: a record must encode to a sequence or a mapping, got "
                    f"{type(row).__name__}; pass encode="
                )
        return out

    def _reject(self, rows: Sequence[Row], refused: list[tuple[int, RowRejectedError]]) -> None:
        for i, err in refused:
            self.rejected_by_sqlstate[err.sqlstate or ""] += 1
            self._rejected.append(RejectedRecord(rows[i], None, err))

    def connector_stats(self) -> ConnectorStats:
        """Breaker state, retries by error class, rows written and rejected by SQLSTATE."""
        return ConnectorStats(
            breaker=self.guard.state.value,
            retries=dict(self.guard.retries),
            rows_written=self.rows_written,
            rejected=dict(self.rejected_by_sqlstate),
        )

    def take_rejected(self) -> list[RejectedRecord]:
        """Rows refused for their content since the last call (``RejectingWriter``)."""
        out, self._rejected = self._rejected, []
        return out

    def _guarded(self, what: str, fn: Any, *, admin: bool = False) -> Any:
        """Run ``fn(connection)`` behind the guard; a broken link drops the connection
        before a retry."""

        def attempt() -> Any:
            conn = self.connection(admin)
            try:
                return fn(conn)
            except psycopg.Error as e:
                if conn.broken:
                    self._drop_connection(admin)
                if is_transient(e):
                    raise
                raise PostgresSinkError(
                    f"{self.name}: {what} on {self.sink.where()}: {e}".splitlines()[0],
                    sqlstate=e.sqlstate,
                ) from e

        return self.guard.call(attempt)

    def close(self) -> None:
        """Close the connections; an open transaction is rolled back by the server."""
        self._drop_connection(False)
        self._drop_connection(True)


class StagedWriter(_PostgresWriter):
    """``transactional`` exactly-once (rows staged in the checkpoint, written on completion),
    or ``at_least_once`` (rows written as they come). A committable is a list of rows."""

    def __init__(
        self,
        sink: PostgresSink,
        me: WriterIdentity,
        name: str,
        conn: psycopg.Connection[Any],
        statements: RowStatements,
        restored: Mapping[int, Any],
    ) -> None:
        super().__init__(
            sink, me, name, conn, statements, exactly_once=sink.guarantee == "exactly_once"
        )
        own = restored.get(me.subtask) or {}
        self.run: str = own.get("run") or os.urandom(8).hex()
        self._current: list[Row] = []
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
            due = [(int(c), rows) for c, rows in state["staged"]]
            if due:
                self._write_checkpoints(self.me.of(old), state["run"], due)

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self._current.extend(self.encode_rows(values))

    def _prepare(self, checkpoint_id: int) -> list[Row]:
        staged, self._current = self._current, []
        return staged

    def _state(self, checkpoint_id: int, committables: list[tuple[int, Any]]) -> Any:
        """``{"version", "run", "staged": [[checkpoint_id, rows], ...]}``."""
        return {
            "version": STATE_VERSION,
            "run": self.run,
            "staged": [[c, rows] for c, rows in committables if rows],
        }

    def _commit(self, checkpoint_id: int, due: list[tuple[int, Any]]) -> None:
        due = [(c, rows) for c, rows in due if rows]
        if due:
            self._write_checkpoints(self.me, self.run, due)

    def _write_checkpoints(self, who: WriterIdentity, run: str, due: list[tuple[int, Any]]) -> None:
        """Write the rows of ``due`` not yet committed, with their progress row, in one
        transaction.

        Steps: 1. read the newest committed checkpoint of ``who``/``run``;
        2. write the rows of the newer checkpoints, recording refused rows in
        ``weirflow_sink_rejects``; 3. insert the progress row; 4. commit;
        5. dead-letter the refused rows, and those recorded for the
        checkpoints that were already committed (their dead letters were
        routed after the restored checkpoint, so they are not in it).
        """

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
                    _record_progress(conn, who, run, newest, written)
                    _prune_progress(conn, who, run, newest)
            return refused, written

        refused, written = self._guarded("commit", txn)
        self.rows_written += written
        for rows, bad in refused:
            self._reject(rows, bad)

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
        """At least once: write the batch in its own transaction now."""
        rows = self.encode_rows(values)

        def txn(conn: psycopg.Connection[Any]) -> list[tuple[int, RowRejectedError]]:
            with conn.transaction():
                return self.statements.write(conn, rows)

        bad = self._guarded("write", txn)
        self.rows_written += len(rows) - len(bad)
        self._reject(rows, bad)


class PreparedWriter(_PostgresWriter):
    """``two_phase`` exactly-once: a committable is a prepared transaction's id."""

    def __init__(
        self,
        sink: PostgresSink,
        me: WriterIdentity,
        name: str,
        conn: psycopg.Connection[Any],
        statements: RowStatements,
        restored: Mapping[int, Any],
    ) -> None:
        super().__init__(sink, me, name, conn, statements, exactly_once=True)
        own = restored.get(me.subtask) or {}
        self.run: str = own.get("run") or os.urandom(8).hex()
        self.epoch = 0
        self._interval: list[Row] = []
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
            self.statements.write(conn, self._interval)
        self._in_txn = True

    def _live(self, conn: psycopg.Connection[Any]) -> None:
        if not self._in_txn or conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            self._in_txn = False
            self._open_txn(conn)

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        rows = self.encode_rows(values)

        def write(conn: psycopg.Connection[Any]) -> list[tuple[int, RowRejectedError]]:
            try:
                self._live(conn)
                return self.statements.write(conn, rows)
            except BaseException:
                self._in_txn = False
                raise

        bad = self._guarded("write", write)
        self._interval.extend(rows)
        self._reject(rows, bad)

    def _prepare(self, checkpoint_id: int) -> str:
        gid = self.me.gid(self.epoch, checkpoint_id)
        rows = len(self._interval)

        def prepare(conn: psycopg.Connection[Any]) -> None:
            if self._prepared(conn, gid):
                return  # PREPARE went through before the link broke
            try:
                self._live(conn)
                _record_progress(conn, self.me, self.run, checkpoint_id, rows)
                conn.execute(_gid_sql("PREPARE TRANSACTION", gid))
            finally:
                self._in_txn = False

        self._guarded("prepare", prepare)
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
            lambda conn: _prune_progress(conn, self.me, self.run, due[-1][0]),
            admin=True,
        )

    def _state(self, checkpoint_id: int, committables: list[tuple[int, Any]]) -> Any:
        """``{"version", "run", "prepared": [[checkpoint_id, gid], ...]}``."""
        return {"version": STATE_VERSION, "run": self.run, "prepared": committables}
