"""The sink's target table and its bookkeeping tables, and writing rows in batches.

Bookkeeping tables (created when missing, under an advisory lock so that
subtasks starting together do not race):

* ``weirflow_sink_progress(job, sink, subtask, run, checkpoint_id, rows)``:
  one row per committed checkpoint of a sink subtask, written in the same
  transaction as that checkpoint's rows; older rows of the same subtask and
  run are pruned in that transaction;
* ``weirflow_sink_rejects(job, sink, subtask, run, checkpoint_id, row_index,
  sqlstate, message)``: the rows a committed checkpoint dead-lettered, so a
  restore can route them again (transactional mode);
* ``weirflow_sink_fence(job, sink, subtask, epoch)``: the epoch of the
  newest writer of a sink subtask (two-phase mode).

Rows are written with ``COPY`` (append) or a pipelined ``executemany`` of
``INSERT ... ON CONFLICT (keys) DO UPDATE`` (upsert), ``batch_size`` rows per
statement, each batch under a savepoint. A batch that fails for a row's
content is rolled back to its savepoint and its halves are written again,
each under its own savepoint, down to single rows, so that only the
offending rows are left out. Deferrable constraints are checked per statement
(``SET CONSTRAINTS ALL IMMEDIATE``) for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import Connection, sql

from weirflow.connectors.postgres.errors import (
    RowRejectedError,
    is_content_error,
    rejected,
)
from weirflow.errors import ConfigError

Mode = Literal["append", "upsert"]

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS weirflow_sink_progress (
    job text NOT NULL, sink text NOT NULL, subtask integer NOT NULL, run text NOT NULL,
    checkpoint_id bigint NOT NULL, rows bigint NOT NULL DEFAULT 0,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, sink, subtask, run, checkpoint_id));
CREATE TABLE IF NOT EXISTS weirflow_sink_rejects (
    job text NOT NULL, sink text NOT NULL, subtask integer NOT NULL, run text NOT NULL,
    checkpoint_id bigint NOT NULL, row_index integer NOT NULL,
    sqlstate text NOT NULL, message text NOT NULL,
    PRIMARY KEY (job, sink, subtask, run, checkpoint_id, row_index));
CREATE TABLE IF NOT EXISTS weirflow_sink_fence (
    job text NOT NULL, sink text NOT NULL, subtask integer NOT NULL, epoch bigint NOT NULL,
    PRIMARY KEY (job, sink, subtask));
"""

#: Advisory lock key serialising the creation of tables by concurrent subtasks.
_DDL_LOCK = 0x77666C6F77  # "wflow"


def ensure_bookkeeping(conn: Connection[Any]) -> None:
    """Create the bookkeeping tables when missing (one transaction, under an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        conn.execute(_BOOKKEEPING)


def table_columns(conn: Connection[Any], table: str) -> list[str] | None:
    """The column names of ``table`` (``name`` or ``schema.name``) in order, or ``None`` when
    it does not exist."""
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    if not rows:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return [] if exists and exists[0] else None
    return [r[0] for r in rows]


def table_identifier(table: str) -> sql.Identifier:
    """``"name"`` or ``"schema"."name"`` as a quoted identifier."""
    return sql.Identifier(*table.split(".", 1))


def create_table(
    conn: Connection[Any], table: str, types: dict[str, str], key_columns: Sequence[str]
) -> None:
    """``CREATE TABLE IF NOT EXISTS`` with the given column types and primary key."""
    parts = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items()]
    if key_columns:
        parts.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key_columns)))
        )
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                table_identifier(table), sql.SQL(", ").join(parts)
            )
        )


def has_deferrable_constraint(conn: Connection[Any], table: str) -> bool:
    """Whether ``table`` has a deferrable constraint (which the sink checks per statement)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND condeferrable)",
        (table,),
    ).fetchone()
    return bool(row and row[0])


def rows_may_wait(conn: Connection[Any], table: str) -> bool:
    """Whether a row written into ``table`` may wait for another transaction's locks: the
    table has a unique or exclusion index (a key another open transaction wrote), a foreign
    key (its check locks the referenced row) or a trigger of its own (it may lock anything)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) "
        "AND (indisunique OR indisexclusion)) "
        "OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND contype = 'f') "
        "OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
        "AND NOT tgisinternal)",
        (table, table, table),
    ).fetchone()
    return bool(row and row[0])


def check_key_constraint(conn: Connection[Any], table: str, key_columns: Sequence[str]) -> bool:
    """Whether ``table`` has a primary key or unique constraint on exactly ``key_columns``."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) "
        "AND i.indisunique AND (SELECT array_agg(a.attname::text ORDER BY a.attname) "
        "FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) "
        "= %s::text[])",
        (table, sorted(key_columns)),
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class RowStatements:
    """How one sink writes rows into its table.

    Attributes:
        table: the target table.
        columns: the columns written, in row order.
        mode: ``append`` or ``upsert``.
        key_columns: the conflict target of ``upsert``.
        batch_size: rows per statement (≥ 1).
        deferrable: whether the table has deferrable constraints.
        rows_may_wait: whether a row written may wait for another transaction's locks
            (:func:`rows_may_wait`; ``True`` when not known).
    """

    table: str
    columns: tuple[str, ...]
    mode: Mode
    key_columns: tuple[str, ...]
    batch_size: int
    deferrable: bool = False
    rows_may_wait: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")

    def copy_sql(self) -> sql.Composed:
        """``COPY table (columns) FROM STDIN``."""
        return sql.SQL("COPY {} ({}) FROM STDIN").format(
            table_identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def insert_sql(self) -> sql.Composed:
        """``INSERT`` of one row; with ``ON CONFLICT (keys) DO UPDATE`` in upsert mode."""
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table_identifier(self.table),
            sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(self.columns)),
        )
        if self.mode == "append":
            return insert
        others = [c for c in self.columns if c not in self.key_columns]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others
                )
            )
            if others
            else sql.SQL("DO NOTHING")
        )
        return sql.SQL("{} ON CONFLICT ({}) {}").format(
            insert, sql.SQL(", ").join(map(sql.Identifier, self.key_columns)), action
        )

    def write(
        self, conn: Connection[Any], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[int, RowRejectedError]]:
        """Write ``rows`` inside the connection's open transaction.

        Returns:
            ``(index into rows, error)`` of every row refused for its content;
            every other row is written.

        Raises:
            psycopg.Error: a failure that is not about a row's content.
        """
        refused: list[tuple[int, RowRejectedError]] = []
        insert = self.insert_sql()
        if self.deferrable:
            # a deferred constraint would refuse the whole transaction at COMMIT; checked
            # per statement, it refuses the one row under its savepoint
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for start in range(0, len(rows), self.batch_size):
            end = min(len(rows), start + self.batch_size)
            self._write_part(conn, rows, start, end, insert, refused)
        return refused

    def write_all_or_none(self, conn: Connection[Any], rows: Sequence[Sequence[Any]]) -> None:
        """Write ``rows`` without savepoints (two round trips fewer a statement): a row
        refused for its content fails the whole transaction, which the caller rolls back
        and writes again with :meth:`write`.

        Raises:
            psycopg.Error: any failure, a row's content included.
        """
        insert = self.insert_sql()
        for start in range(0, len(rows), self.batch_size):
            self._write_batch(conn, rows[start : start + self.batch_size], insert)

    def _write_part(
        self,
        conn: Connection[Any],
        rows: Sequence[Sequence[Any]],
        start: int,
        end: int,
        insert: sql.Composed,
        refused: list[tuple[int, RowRejectedError]],
    ) -> None:
        """Write ``rows[start:end]`` under a savepoint; when a row's content fails it, write
        the halves again (down to single rows), so that k bad rows cost O(k log n)
        statements, not one per row."""
        try:
            with conn.transaction():
                self._write_batch(conn, rows[start:end], insert)
            return
        except Exception as e:
            if not is_content_error(e):
                raise
            if end - start == 1:
                refused.append((start, rejected(e)))
                return
        middle = (start + end) // 2
        self._write_part(conn, rows, start, middle, insert, refused)
        self._write_part(conn, rows, middle, end, insert, refused)

    def _write_batch(
        self, conn: Connection[Any], batch: Sequence[Sequence[Any]], insert: sql.Composed
    ) -> None:
        with conn.cursor() as cur:
            if self.mode == "append":
                with cur.copy(self.copy_sql()) as copy:
                    for row in batch:
                        copy.write_row(row)
            elif len(batch) == 1:
                cur.execute(insert, batch[0])
            else:
                cur.executemany(insert, batch)
