"""A ``COPY`` kept open while an interval's rows arrive (exactly-once appends).

Written at the barrier in one statement, an interval's rows keep the client
formatting them and the server parsing them one after the other: the client
can run ahead of the server only by what the socket buffers hold, and then
waits at the statement's end. Streamed as they arrive, the server parses
while the job computes and formats the next rows, as in one plain ``COPY``;
at the barrier only what the server has not read yet remains.

The stream is only a head start. The writer keeps every row of the interval
in its buffer too, and on any failure of the stream (a lost link, an
overrun call, an error that is not about a row's content) it drops the
stream's connection, which rolls its transaction back, and writes the
interval at the barrier as it would have without the stream. A row the
table refuses for its content fails the whole ``COPY``: the stream's
transaction goes back to its savepoint and the interval's rows are written
again with :meth:`~weirflow.connectors.postgres.tables.RowStatements.write`,
which sets the refused rows aside.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import psycopg

from weirflow.connectors.postgres.errors import is_content_error
from weirflow.connectors.postgres.tables import RowStatements

_SAVEPOINT = "weirflow_stream"


class IntervalStream:
    """One open ``COPY`` inside the transaction of a connection.

    Args:
        conn: a connection in an open transaction, which the stream keeps until
            :meth:`finish`; what the transaction wrote before is kept whatever happens
            to the streamed rows.
        statements: the sink's statements (append mode).

    Attributes:
        conn: the connection whose transaction holds the streamed rows.
        rows: rows streamed so far.

    Raises:
        psycopg.Error: the ``COPY`` could not be started.
    """

    def __init__(self, conn: psycopg.Connection[Any], statements: RowStatements) -> None:
        self.conn = conn
        self.rows = 0
        if statements.deferrable:
            # checked per statement, a refused row fails the COPY, not the COMMIT
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        self._cursor = conn.cursor()
        self._copy_cm: AbstractContextManager[Any] = self._cursor.copy(statements.copy_sql())
        self._copy = self._copy_cm.__enter__()

    def write(self, rows: list[Any]) -> None:
        """Send ``rows`` (each a sequence in column order).

        Raises:
            psycopg.Error: the link failed (a refused row shows only at :meth:`finish`).
        """
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)
        self.rows += len(rows)

    def finish(self) -> bool:
        """End the ``COPY`` and wait for the server.

        Returns:
            ``True`` when the server took every row; ``False`` when a row's content was
            refused, the transaction then back at its savepoint (no streamed row in it,
            what it held before the stream kept).

        Raises:
            psycopg.Error: any other failure (the caller drops the connection).
        """
        try:
            self._copy_cm.__exit__(None, None, None)
        except psycopg.Error as e:
            if not is_content_error(e):
                raise
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            return False
        finally:
            self._cursor.close()
        self.conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return True
