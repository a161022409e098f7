"""A row the table refuses only when a checkpoint commits, in a whole job against a private
PostgreSQL server: another client takes the row's unique key between the barrier and the
commit of the job's final checkpoint.

``transactional`` holds the barrier's transaction open until the checkpoint completes; when
its link breaks in between, the commit writes the rows again and finds the key taken. The
refused row must reach the job's committed dead letters once, every other row the table
once. ``two_phase`` prepares at the barrier: the prepared transaction holds the key, so the
other client cannot take it before ``COMMIT PREPARED`` and nothing is refused at commit."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import PgServer, pg_server_fixture  # noqa: E402, F401
from weirflow import CheckpointConfig, Dataflow, JobResult, RestartStrategy  # noqa: E402
from weirflow.connectors import EventLogSink, IterableSource, PostgresSink  # noqa: E402
from weirflow.eventlog import EventLog  # noqa: E402

N = 200
#: The key the other client takes; the job's row with it comes last, in the final interval.
TAKEN = N - 1


class Interloper:
    """Another client of the table, run as a sink of the job so that it acts at a known point:
    on the first barrier after the PostgreSQL sink wrote key ``TAKEN`` uncommitted (the sink
    snapshots first, being upstream), it cuts the backends idle in a transaction (the sink's
    held one) and tries to insert ``TAKEN`` itself.

    Attributes:
        outcome: ``"inserted"``, ``"blocked"`` (the key stayed held until the commit), or
            ``None`` before it acted. It acts once per job run, restarts included.
    """

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.table = table
        self.outcome: str | None = None

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> Interloper:
        """One writer for every subtask: the state is this client's, not the job's."""
        return self

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Ignores the job's records."""

    def pre_commit(self, checkpoint_id: int) -> None:
        """Act when the sink holds the key uncommitted (an insert of it has to wait)."""
        if self.outcome is None and self._held():
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()"
                )
            self.outcome = "inserted" if self.insert(commit=True) else "blocked"

    def _held(self) -> bool:
        return not self.insert(commit=False)

    def insert(self, commit: bool) -> bool:
        """Insert ``TAKEN`` waiting at most 200 ms for a lock; ``False`` when it had to wait."""
        with psycopg.connect(self.dsn) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            try:
                conn.execute(f"INSERT INTO {self.table} VALUES (%s, -1)", (TAKEN,))
            except psycopg.errors.LockNotAvailable:
                return False
            if not commit:
                conn.rollback()
            return True

    def commit(self, checkpoint_id: int) -> None:
        """Nothing to commit."""

    def finish(self) -> None:
        """Nothing to finish."""

    def close(self) -> None:
        """Holds no connection."""


def run_job(
    tmp_path: Path, dsn: str, table: str, exactly_once: str
) -> tuple[Interloper, JobResult]:
    """Rows ``(i, i)`` for ``i < N`` into ``table`` (unique ``id``), dead letters into topic
    ``refused`` of an event log; one checkpoint only, the final one (the interval is an
    hour); restarts allowed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL)")
    with EventLog(tmp_path / "log") as lg:
        lg.create_topic("refused", 1)
    interloper = Interloper(dsn, table)
    flow = Dataflow(f"pg_late_{exactly_once}")
    refused = (
        flow.source(IterableSource([(i, i) for i in range(N)]))
        .sink(PostgresSink(dsn, table, exactly_once=exactly_once), name="pg")  # type: ignore[arg-type]
        .dead_letters()
    )
    refused.map(lambda d: [*d.value, d.message[:5]], name="letter").sink(
        EventLogSink(tmp_path / "log", "refused"), name="refused"
    )
    refused.sink(interloper, name="interloper")
    result = flow.run(
        1,
        checkpoint=CheckpointConfig(storage=str(tmp_path / "chk"), interval=timedelta(hours=1)),
        restart=RestartStrategy.fixed_delay(3, timedelta(milliseconds=10)),
    )
    return interloper, result


def table_rows(dsn: str, table: str) -> list[tuple[int, int]]:
    with psycopg.connect(dsn) as conn:
        return [(int(i), int(v)) for i, v in conn.execute(f"SELECT id, v FROM {table} ORDER BY id")]


def dead_letters(log_dir: Path) -> list[list[Any]]:
    """The committed records of topic ``refused``."""
    with EventLog(log_dir) as lg:
        return [json.loads(r.value) for r in lg.read("refused", 0, 0, max_records=1000)]  # type: ignore[arg-type]


def test_transactional_row_refused_at_the_final_commit_is_dead_lettered_once(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Scenario: transactional; at the final checkpoint's barrier the sink writes every row in
    a held transaction, whose link is cut before the checkpoint completes, and another client
    commits key TAKEN. The commit writes the rows again and the table refuses TAKEN: its dead
    letter (SQLSTATE 23505) is committed once, every other row is in the table once."""
    interloper, result = run_job(tmp_path, pg_server.dsn, "late_txn", "transactional")
    assert interloper.outcome == "inserted"
    assert result.restarts == 1  # the refusing commit failed the attempt
    assert table_rows(pg_server.dsn, "late_txn") == [(i, i) for i in range(TAKEN)] + [(TAKEN, -1)]
    assert dead_letters(tmp_path / "log") == [[TAKEN, TAKEN, "23505"]]


def test_two_phase_prepared_rows_cannot_be_refused_at_commit(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Scenario: two_phase; between the final checkpoint's PREPARE and its COMMIT PREPARED
    another client tries to insert key TAKEN and cuts idle transactions: the prepared
    transaction keeps the key, the other client has to wait, and the commit writes every row
    once with no dead letter; afterwards the other client's insert is refused."""
    interloper, result = run_job(tmp_path, pg_server.dsn, "late_2pc", "two_phase")
    assert interloper.outcome == "blocked" and result.restarts == 0
    assert table_rows(pg_server.dsn, "late_2pc") == [(i, i) for i in range(N)]
    assert dead_letters(tmp_path / "log") == []
    with pytest.raises(psycopg.errors.UniqueViolation):
        interloper.insert(commit=True)
