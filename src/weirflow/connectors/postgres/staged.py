"""The ``transactional`` (and ``at_least_once``) writer of
:class:`~weirflow.connectors.PostgresSink`: rows staged in the checkpoint, written with a
progress row in one transaction when the checkpoint completes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg

from weirflow.connectors.postgres.errors import RowRejectedError
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
from weirflow.errors import ConfigError

if TYPE_CHECKING:
    from weirflow.connectors.postgres.sink import PostgresSink

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[list[Any]])


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
            sink, me, name, conn, statements, exactly_once=sink.guarantee == "exactly_once",
            restarted=restored is not None,
        )
        restored = restored or {}
        self.run = run_token(restored, me.subtask)
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
            self._write_checkpoints(self.me.of(old), state["run"], state["staged"])

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self._current.extend(self.encode_rows(values))

    def _prepare(self, checkpoint_id: int) -> bytes:
        """The interval's rows as one msgpack blob: the checkpoint stores one bytes value
        instead of walking every row.

        Steps: 1. write the rows in a transaction that is rolled back, and
        dead-letter (now, before the barrier goes on, so the dead letters
        belong to this checkpoint) the rows the table refuses for their
        content; 2. stage the others.

        Raises:
            ConfigError: a value msgpack cannot hold (the message names its type).
        """
        staged, self._current = self._current, []
        if staged:
            bad = self._guarded("check rows", lambda conn: self._trial(conn, staged))
            if bad:
                refused = {i for i, _ in bad}
                self._reject(staged, bad)
                staged = [row for i, row in enumerate(staged) if i not in refused]
        try:
            return _encoder.encode(staged)
        except (TypeError, msgspec.EncodeError) as e:
            raise ConfigError(
                f"{self.name}: a row value cannot be staged in the checkpoint: {e}; encode= "
                "it to str, int, float, bytes, datetime, Decimal or UUID"
            ) from e

    def _trial(
        self, conn: psycopg.Connection[Any], rows: list[Row]
    ) -> list[tuple[int, RowRejectedError]]:
        """Write ``rows`` in a transaction that is always rolled back; return the refused."""
        with conn.transaction(force_rollback=True):
            return self.statements.write(conn, rows)

    def _state(self, checkpoint_id: int, committables: list[tuple[int, Any]]) -> Any:
        """``{"version", "run", "staged": [[checkpoint_id, msgpack rows], ...]}``."""
        return {
            "version": STATE_VERSION,
            "run": self.run,
            "staged": [[c, rows] for c, rows in committables if rows],
        }

    def _commit(self, checkpoint_id: int, due: list[tuple[int, Any]]) -> None:
        self._write_checkpoints(self.me, self.run, due)

    def _write_checkpoints(
        self, who: WriterIdentity, run: str, staged: Sequence[Sequence[Any]]
    ) -> None:
        """Write the rows of ``due`` not yet committed, with their progress row, in one
        transaction.

        Steps: 1. read the newest committed checkpoint of ``who``/``run``;
        2. write the rows of the newer checkpoints, recording refused rows in
        ``weirflow_sink_rejects``; 3. insert the progress row; 4. commit;
        5. dead-letter the refused rows, and those recorded for the
        checkpoints that were already committed (their dead letters were
        routed after the restored checkpoint, so they are not in it).
        """

        due = [(int(c), _decoder.decode(blob)) for c, blob in staged]
        due = [(c, rows) for c, rows in due if rows]
        if not due:
            return

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

        bad = self._guarded("write", txn, ends_transaction=True)
        self.rows_written += len(rows) - len(bad)
        self._reject(rows, bad)
