"""``PostgresSink``: rows into a PostgreSQL table, exactly once or at least once.

Two exactly-once modes (both two-phase-commit writers, see
:mod:`weirflow.connectors.two_phase`):

``exactly_once="transactional"`` (default; any server)
    The rows of checkpoint interval ``n`` are staged in memory and go into
    checkpoint ``n`` (they are its committable). At barrier ``n`` they are
    written, with a row of ``weirflow_sink_progress`` recording ``n``, in a
    transaction that is held open (not prepared) until ``n`` completes and
    is then committed; a crash in between leaves the server to roll it back,
    and a restore writes the restored staged rows again unless the progress
    table shows their checkpoint committed. In ``append`` mode the rows are
    also streamed into that transaction's ``COPY`` as they arrive
    (``stream_rows``, :mod:`.stream`), so that the server parses them while
    the job runs; any failure of the stream leaves the barrier to write them
    as above. Cost: a checkpoint holds the rows of its interval, an open
    transaction holds its locks until the checkpoint completes (streamed:
    from the interval's first row), and rows reach the table one checkpoint
    late. Rows
    the table refuses for their content are found at the barrier, so their
    dead letters belong to the checkpoint like any other output; a row refused
    only at commit time (the held transaction's link broke, and a key it
    wrote was taken by another writer before the rows were written again) is
    recorded in ``weirflow_sink_rejects`` and the commit fails (retriable):
    the restore of that checkpoint dead-letters it, so that a checkpoint
    carries its dead letter even when it was the job's final one. With
    ``max_concurrent > 1`` checkpoints, or at the end of input before the
    last checkpoint completed, an interval written while an earlier
    checkpoint's transaction is still held is written under a short lock
    timeout: a row that would wait for the held transaction's locks (which
    only this thread can release) rolls it back, and the interval is then
    written when its checkpoint completes, so the rows it refuses fail the
    commit like the above; nor is an interval streamed while an earlier
    checkpoint is pending. Both hold only for a table where a row can wait
    for another transaction: one with a unique or exclusion index, a foreign
    key or a trigger. At the end of input the
    last interval's rows are written at once (held for the final checkpoint,
    whose id is added with the progress row at its barrier), so that their
    dead letters leave before the end of input.

``exactly_once="two_phase"`` (needs ``max_prepared_transactions > 0``)
    Rows go into an open database transaction: in ``append`` mode streamed into
    its ``COPY`` as they arrive (``stream_rows``; after a failure of the stream,
    and in ``upsert`` mode, ``batch_size`` at a time); on barrier ``n`` it is
    prepared (``PREPARE TRANSACTION``), and its id is the committable;
    when ``n`` completes it is committed (``COMMIT PREPARED``). A restore
    commits the restored prepared transactions and rolls back every other
    prepared transaction of the sink subtask; each writer takes a new
    **epoch** from ``weirflow_sink_fence`` and every transaction checks it,
    so a zombie of an earlier attempt can no longer prepare anything. No row is
    refused at ``COMMIT PREPARED``: constraints are checked before ``PREPARE``,
    and the prepared transaction keeps its keys even when its link breaks. Choose
    it for large intervals and for throughput (checkpoints stay small, the
    table does the staging: each row is written once, not also into the
    checkpoint) when the server allows prepared transactions and someone
    watches ``pg_prepared_xacts`` (a prepared transaction holds its locks
    and stops VACUUM until it is resolved).

``guarantee="at_least_once"`` writes each batch in its own transaction
as it arrives; a replay after a failover may write rows again (use
``mode="upsert"`` to make that harmless).

Rows refused for their content (SQLSTATE class 22 or 23) are dead-lettered
(:class:`~weirflow.connectors.RejectedRecord`, routed to the sink's
``dead_letters()`` stream) and the rest of the batch is written; the writers
send every buffered row to the database at the end of input
(:class:`~weirflow.connectors.RejectingWriter`), so that no refusal is found
after the operators downstream ended; transient
errors are retried behind a circuit breaker (:class:`~weirflow.connectors.Resilience`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

import psycopg

from weirflow.connectors.base import LaterCommits, SinkRestore
from weirflow.connectors.postgres.errors import PostgresSinkError, first_line, is_transient
from weirflow.connectors.postgres.prepared import PreparedWriter
from weirflow.connectors.postgres.staged import StagedWriter
from weirflow.connectors.postgres.tables import (
    Mode,
    RowStatements,
    check_key_constraint,
    create_table,
    ensure_bookkeeping,
    has_deferrable_constraint,
    rows_may_wait,
    table_columns,
)
from weirflow.connectors.postgres.writers import WriterIdentity, last_committed
from weirflow.connectors.resilience import Resilience
from weirflow.errors import ConfigError

Guarantee = Literal["exactly_once", "at_least_once"]
ExactlyOnceMode = Literal["transactional", "two_phase"]


class PostgresSink:
    """Writes records as rows of one PostgreSQL table (see the module docstring).

    Args:
        dsn: a libpq connection string or URL.
        table: the target table, ``name`` or ``schema.name``.
        columns: the columns written, in row order (default: every column of
            the table); with ``create_table=True`` a mapping column → SQL type.
        encode: ``record -> row``: a sequence in column order or a mapping
            column → value (default: the record itself).
        mode: ``append`` (``COPY``) or ``upsert`` (``INSERT ... ON CONFLICT
            (key_columns) DO UPDATE``; a re-fired window result replaces its row).
        key_columns: the conflict target of ``upsert`` (a primary key or
            unique constraint on exactly these columns).
        guarantee: ``exactly_once`` or ``at_least_once``.
        exactly_once: ``transactional`` or ``two_phase`` (module docstring).
        create_table: create the table when missing (needs ``columns`` as a mapping).
        batch_size: rows per ``COPY``/``executemany`` statement; ``two_phase``
            without a stream buffers this many rows before a write (a barrier
            writes what is buffered). Large statements keep the database busy
            while Python encodes (a statement is one round trip, whatever its size).
        stream_rows: exactly-once ``append`` only: send an interval's rows as they
            arrive into one ``COPY`` that its barrier ends (``False``: statements of
            ``batch_size`` rows, all at the barrier in ``transactional`` mode).
        resilience: retries and circuit breaker (default: :class:`Resilience`).
        connect_timeout: bound on one connection attempt.

    Raises:
        ConfigError: an option is out of range or inconsistent.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        columns: Sequence[str] | Mapping[str, str] | None = None,
        encode: Callable[[Any], Sequence[Any] | Mapping[str, Any]] | None = None,
        mode: Mode = "append",
        key_columns: Sequence[str] = (),
        guarantee: Guarantee = "exactly_once",
        exactly_once: ExactlyOnceMode = "transactional",
        create_table: bool = False,
        batch_size: int = 200_000,
        stream_rows: bool = True,
        resilience: Resilience | None = None,
        connect_timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        if mode not in ("append", "upsert"):
            raise ConfigError(f"PostgresSink mode must be 'append' or 'upsert', got {mode!r}")
        if guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"guarantee must be exactly_once or at_least_once, got {guarantee!r}")
        if exactly_once not in ("transactional", "two_phase"):
            raise ConfigError(
                f"exactly_once must be 'transactional' or 'two_phase', got {exactly_once!r}"
            )
        if mode == "upsert" and not key_columns:
            raise ConfigError("PostgresSink mode='upsert' needs key_columns=(...) to conflict on")
        if create_table and not isinstance(columns, Mapping):
            raise ConfigError(
                "PostgresSink create_table=True needs columns={name: SQL type, ...} to create"
            )
        if columns is not None and key_columns and not set(key_columns) <= set(columns):
            raise ConfigError(
                f"key_columns {sorted(set(key_columns) - set(columns))} are not in columns"
            )
        if batch_size < 1:
            raise ConfigError(f"PostgresSink batch_size must be ≥ 1, got {batch_size}")
        self.dsn = dsn
        self.table = table
        self.columns = None if columns is None else tuple(columns)
        self.column_types = dict(columns) if isinstance(columns, Mapping) else None
        self.encode = encode
        self.mode = mode
        self.key_columns = tuple(key_columns)
        self.guarantee = guarantee
        self.exactly_once = exactly_once
        self.create_table = create_table
        self.batch_size = batch_size
        self.stream_rows = stream_rows
        self.resilience = resilience or Resilience()
        self.connect_timeout = connect_timeout

    def connect(self) -> psycopg.Connection[Any]:
        """Open an autocommit connection (transactions are explicit).

        Raises:
            psycopg.Error: the server cannot be reached or refused the session.
        """
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout.total_seconds())),
        )

    def where(self) -> str:
        """The target for messages: ``table 'out' at host:port/db``."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.Error:
            return f"table {self.table!r}"
        host = info.get("host", "localhost")
        return f"table {self.table!r} at {host}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def check(self, conn: psycopg.Connection[Any]) -> RowStatements:
        """Check the table against the options, creating what is missing; return how to write.

        Steps: 1. create the bookkeeping tables; 2. create the table if asked
        and missing; 3. resolve the columns and check them; 4. check the
        conflict target of ``upsert``; 5. check prepared transactions for
        ``two_phase``.

        Raises:
            ConfigError: a missing table, an unknown column, no unique key
                for upsert, prepared transactions off for two_phase; one line
                naming the fix.
        """
        ensure_bookkeeping(conn)
        found = table_columns(conn, self.table)
        if found is None and self.create_table:
            assert self.column_types is not None
            create_table(conn, self.table, self.column_types, self.key_columns)
            found = table_columns(conn, self.table)
        if found is None:
            raise ConfigError(
                f"PostgresSink: {self.where()} does not exist; create it, or pass "
                "create_table=True with columns={name: SQL type}"
            )
        columns = self.columns or tuple(found)
        unknown = [c for c in columns if c not in found]
        if unknown:
            raise ConfigError(
                f"PostgresSink: {self.where()} has no column(s) {unknown}; its columns are "
                f"{found}; fix columns= or the table"
            )
        if self.mode == "upsert" and not check_key_constraint(conn, self.table, self.key_columns):
            raise ConfigError(
                f"PostgresSink: {self.where()} has no primary key or unique constraint on "
                f"{list(self.key_columns)}, which upsert needs for ON CONFLICT; add one"
            )
        if self.guarantee == "exactly_once" and self.exactly_once == "two_phase":
            row = conn.execute("SHOW max_prepared_transactions").fetchone()
            if not row or int(row[0]) == 0:
                raise ConfigError(
                    "PostgresSink exactly_once='two_phase' needs max_prepared_transactions > 0 "
                    "on the server (it is 0); set it and restart the server, or use "
                    "exactly_once='transactional'"
                )
        return RowStatements(
            self.table,
            columns,
            self.mode,
            self.key_columns,
            self.batch_size,
            deferrable=has_deferrable_constraint(conn, self.table),
            rows_may_wait=rows_may_wait(conn, self.table),
        )

    def open_checked(self, name: str, fresh: bool) -> tuple[psycopg.Connection[Any], RowStatements]:
        """Connect and :meth:`check`; on a fresh start a connection failure fails at once,
        on a restore it is retried (the database may be coming back).

        Raises:
            ConfigError: as :meth:`check`, or the server cannot be reached on a fresh start.
            PostgresSinkError: on a restore, the server stayed unreachable through the
                retries (retriable: the restart strategy decides).
        """

        def attempt() -> tuple[psycopg.Connection[Any], RowStatements]:
            conn = self.connect()
            try:
                return conn, self.check(conn)
            except BaseException:
                conn.close()
                raise

        if not fresh:
            try:
                return self.resilience.guard(name, is_transient).call(attempt)
            except psycopg.Error as e:
                # the same DSN worked before the failure: a restart may find the server back
                raise PostgresSinkError(
                    f"PostgresSink: cannot reach {self.where()}: {first_line(e)}",
                    retriable=is_transient(e),
                ) from e
        try:
            return attempt()
        except psycopg.Error as e:
            raise ConfigError(
                f"PostgresSink: cannot use {self.where()}: {first_line(e)}; check the dsn"
            ) from e

    def identity(self, job: str, operator: str, subtask: int) -> WriterIdentity:
        """Who writes: the keys of the progress and fence rows and the prepared-transaction ids."""
        digest = hashlib.sha256(f"{job}\0{operator}".encode()).hexdigest()[:16]
        return WriterIdentity(job, operator, subtask, f"wf:{digest}:")

    def commits_after(self, at: SinkRestore) -> LaterCommits | None:
        """Read the progress rows of the restored subtasks (``CommitTrackingSink``).

        Returns:
            ``None`` at least once, or when no restored subtask committed a
            checkpoint newer than ``at.checkpoint_id``.

        Raises:
            PostgresSinkError: the database cannot be read.
        """
        if self.guarantee != "exactly_once" or not at.restored:
            return None
        try:
            with self.connect() as conn:
                ensure_bookkeeping(conn)
                done = [
                    last_committed(conn, self.identity(at.job, at.operator, old), state["run"])
                    for old, state in sorted(at.restored.items())
                    if state
                ]
        except psycopg.Error as e:
            raise PostgresSinkError(
                f"reading progress of {self.where()}: {first_line(e)}", retriable=is_transient(e)
            ) from e
        newest = max(done, default=-1)
        if newest <= at.checkpoint_id:
            return None
        return LaterCommits(newest, None, self.where())

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> StagedWriter | PreparedWriter:
        """Create one sink subtask's writer: connect, check the table, resolve the restored
        checkpoint (module docstring).

        Raises:
            ConfigError: bad options or table (one line, before any record is read).
            PostgresSinkError: the restore could not be resolved.
        """
        name = f"{operator}[{subtask}/{parallelism}]"
        conn, statements = self.open_checked(name, fresh=restored is None)
        me = self.identity(job, operator, subtask)
        if self.guarantee == "exactly_once" and self.exactly_once == "two_phase":
            return PreparedWriter(self, me, name, conn, statements, restored)
        return StagedWriter(self, me, name, conn, statements, restored)
