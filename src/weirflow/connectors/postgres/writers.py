"""What the two sink writers of :class:`~weirflow.connectors.PostgresSink` share.

The writers are :class:`~weirflow.connectors.postgres.staged.StagedWriter`
(``transactional``, and ``at_least_once``) and
:class:`~weirflow.connectors.postgres.prepared.PreparedWriter`
(``two_phase``); ``sink.py`` says when each is used.
Every database call runs through the sink's :class:`~weirflow.connectors.Resilience`
guard, and every transaction is written so that running it again after an
unanswered ``COMMIT`` (the link broke after the server committed) changes
nothing: it first reads what the progress table already holds.
"""

from __future__ import annotations

import logging
import os
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import psycopg

from weirflow.connectors.base import RejectedRecord
from weirflow.connectors.postgres.deadline import CallDeadline
from weirflow.connectors.postgres.errors import (
    PostgresSinkError,
    RowRejectedError,
    is_transient,
)
from weirflow.connectors.postgres.stream import IntervalStream
from weirflow.connectors.postgres.tables import RowStatements
from weirflow.connectors.resilience import BreakerState
from weirflow.connectors.two_phase import TwoPhaseCommitWriter
from weirflow.errors import ConfigError
from weirflow.metrics import ConnectorStats

if TYPE_CHECKING:
    from weirflow.connectors.postgres.sink import PostgresSink

log = logging.getLogger("weirflow.connectors.postgres")

STATE_VERSION = 1
Row = Sequence[Any]
_PLAIN_ROWS = {tuple, list}


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


def run_token(restored: Mapping[int, Any], subtask: int) -> str:
    """The run token of a writer: its restored one, or a new one on a fresh start (so that a
    new run of the same job never reads an earlier run's progress rows)."""
    own = restored.get(subtask) or {}
    return own.get("run") or os.urandom(8).hex()


def last_committed(conn: psycopg.Connection[Any], who: WriterIdentity, run: str) -> int:
    """The newest checkpoint id ``who`` committed in run ``run`` (-1 when none)."""
    row = conn.execute(
        "SELECT max(checkpoint_id) FROM weirflow_sink_progress "
        "WHERE job = %s AND sink = %s AND subtask = %s AND run = %s",
        (*who.key(), run),
    ).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def record_progress(
    conn: psycopg.Connection[Any], who: WriterIdentity, run: str, checkpoint_id: int, rows: int
) -> None:
    """Insert the progress row of ``checkpoint_id``."""
    conn.execute(
        "INSERT INTO weirflow_sink_progress (job, sink, subtask, run, checkpoint_id, rows) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (*who.key(), run, checkpoint_id, rows),
    )


def prune_progress(
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


class PostgresWriter(TwoPhaseCommitWriter[Any]):
    """What both writers share: the connection, row encoding, the guard, dead letters.

    Attributes:
        rows_written: rows that reached the table (committed).
        rejected_by_sqlstate: SQLSTATE → rows dead-lettered.
        transactions: transactions ended (committed, or prepared in two-phase mode).
        transaction_s: seconds spent in the calls that ended them, retries included.
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
        restarted: bool,
    ) -> None:
        # after a failure the input rate ramps up, when the sink's resilience asks for it
        super().__init__(
            exactly_once=exactly_once,
            guard=sink.resilience.guard(name, is_transient),
            ramp=sink.resilience.ramp() if restarted else None,
        )
        self.sink = sink
        self.me = me
        self.name = name
        self.statements = statements
        self._deadline = CallDeadline(name, sink.resilience.call_timeout.total_seconds())
        self.rejected_by_sqlstate: dict[str, int] = {}
        self._conns: dict[bool, psycopg.Connection[Any] | None] = {False: conn, True: None}
        self._rejected: list[RejectedRecord] = []
        # the interval's rows streamed into a COPY on the data connection (stream.py), or None
        self._stream: IntervalStream | None = None
        self._stream_failed = False
        self._may_stream = exactly_once and statements.mode == "append" and sink.stream_rows

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

    # -- the interval's stream ------------------------------------------------

    def _stream_allowed(self) -> bool:
        """Whether an interval's stream may open now: exactly-once appends with
        ``stream_rows``, no stream failed in this interval, and the breaker closed (an open
        one would only fail it)."""
        return (
            self._may_stream
            and not self._stream_failed
            and (self.guard is None or self.guard.state is BreakerState.CLOSED)
        )

    def _drop_stream(self) -> None:
        """Forget the stream, if any, and close the data connection that holds it or was
        opening it (the server rolls its transaction back); its rows stay buffered."""
        self._stream = None
        self._drop_connection(False)

    # -- rows ---------------------------------------------------------------

    def encode_rows(self, values: list[Any]) -> list[Row]:
        """Turn records into rows in column order (tuples and lists of the right width are
        taken as they are).

        Raises:
            ConfigError: a record has fields outside the columns, or the wrong length.
        """
        encode = self.sink.encode
        rows = values if encode is None else list(map(encode, values))
        width = len(self.statements.columns)
        # the common case, checked by C loops instead of a Python loop per row
        if set(map(type, rows)) <= _PLAIN_ROWS and set(map(len, rows)) <= {width}:
            return rows
        return [self._encode_other(row) for row in rows]

    def _encode_other(self, row: Any) -> Row:
        columns = self.statements.columns
        if isinstance(row, Mapping):
            extra = set(row) - set(columns)
            if extra:
                raise ConfigError(
                    f"{self.name}: record has fields {sorted(map(str, extra))} that "
                    f"{self.sink.where()} has no column for; its columns are {list(columns)}"
                )
            return [row.get(c) for c in columns]
        if isinstance(row, Sequence) and not isinstance(row, str | bytes):
            if len(row) != len(columns):
                raise ConfigError(
                    f"{self.name}: row of {len(row)} values for the {len(columns)} columns "
                    f"{list(columns)}; fix encode= or columns="
                )
            return list(row)
        raise ConfigError(
            f"{self.name}: a record must encode to a sequence or a mapping, got "
            f"{type(row).__name__}; pass encode="
        )

    def _accepted(
        self, rows: Sequence[Row], refused: list[tuple[int, RowRejectedError]]
    ) -> list[Row]:
        """Set the ``refused`` rows aside (:meth:`_reject`); return the others, in order
        (``rows`` itself, not a copy, when it is a list and none was refused)."""
        if not refused:
            return rows if isinstance(rows, list) else list(rows)
        self._reject(rows, refused)
        out = {i for i, _ in refused}
        return [row for i, row in enumerate(rows) if i not in out]

    def _reject(self, rows: Sequence[Row], refused: list[tuple[int, RowRejectedError]]) -> None:
        for i, err in refused:
            # a plain dict: dict() copies it atomically in another thread (connector_stats)
            code = err.sqlstate or ""
            self.rejected_by_sqlstate[code] = self.rejected_by_sqlstate.get(code, 0) + 1
            self._rejected.append(RejectedRecord(rows[i], None, err))

    def connector_stats(self) -> ConnectorStats:
        """The base's stats with the rows rejected by SQLSTATE.

        Safe to call from another thread than the task's (the dashboard reads it while the
        task may be blocked in a retry wait).
        """
        stats = super().connector_stats() or ConnectorStats()
        return replace(stats, rejected=dict(self.rejected_by_sqlstate))

    def take_rejected(self) -> list[RejectedRecord]:
        """Rows refused for their content since the last call (``RejectingWriter``)."""
        out, self._rejected = self._rejected, []
        return out

    def end_of_input(self) -> None:
        """The input ended (``RejectingWriter``): exactly once, write the rows not yet
        written into the transaction the next (final) checkpoint prepares, uncommitted, so
        that the rows the table refuses for their content are set aside now.

        Raises:
            PostgresSinkError: the write failed and its retries ran out.
        """
        if self.exactly_once:
            self._write_pending()

    @abstractmethod
    def _write_pending(self) -> None:
        """Write the buffered rows into the open transaction (see :meth:`end_of_input`)."""

    def _guarded(
        self, what: str, fn: Any, *, admin: bool = False, ends_transaction: bool = False
    ) -> Any:
        """Run ``fn(connection)`` behind the guard; a broken link drops the connection
        before a retry. With ``ends_transaction`` the call's time, retries included, counts
        as transaction time (metrics)."""

        def attempt() -> Any:
            conn = self.connection(admin)
            try:
                with self._deadline.armed(conn):
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

        start = time.perf_counter()
        result = self._call_guarded(attempt)
        if ends_transaction:
            self.transactions += 1
            self.transaction_s += time.perf_counter() - start
        return result

    def close(self) -> None:
        """Close the connections; an open transaction (and stream) is rolled back by the
        server."""
        self._stream = None
        self._drop_connection(False)
        self._drop_connection(True)
        self._deadline.close()
