"""Rows the table refuses in a bounded job's last interval, in whole jobs against a private
PostgreSQL server, with the dead letters crossing a channel (rebalanced) into an exactly-once
event-log topic: every refused row must be in that topic once, every other row in the table
once.

The hard cases are the refusals found late: at the end of input, and when another client
takes a row's unique key after the sink wrote it but before its transaction committed (the
sink's link is cut, so the server rolls its transaction back and frees the key). Operators
after the sink end with their input, so a dead letter found after it would be lost.
``transactional`` holds a transaction open from the barrier to the checkpoint's completion;
``two_phase`` prepares at the barrier, and a prepared transaction keeps its keys."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

psycopg = pytest.importorskip("psycopg")

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import PgServer, pg_server_fixture  # noqa: E402, F401
from weirflow import CheckpointConfig, Dataflow, JobResult, RestartStrategy  # noqa: E402
from weirflow.connectors import (  # noqa: E402
    EventLogSink,
    IterableSource,
    PostgresSink,
    RejectedRecord,
)
from weirflow.errors import WeirflowError  # noqa: E402
from weirflow.eventlog import EventLog  # noqa: E402

N = 200
#: The key the other client takes; the job's row with it comes last, in the final interval.
TAKEN = N - 1
#: A row whose NULL the table's NOT NULL refuses, in the final interval.
NULL_ROW = N - 5

#: When the other client acts (``never``: it does not).
Moment = Literal["end_of_input", "pre_commit", "never"]


class Interloper:
    """Another client of the table, run as a sink of the job (chained after the PostgreSQL
    sink, so its hooks run right after the sink's) so that it acts at a known moment: the
    first time, at ``when``, that the sink holds key ``TAKEN`` uncommitted (an insert of it
    has to wait), it cuts the backends idle in a transaction (the sink's open one) and tries
    to insert ``TAKEN`` itself, once per job run, restarts included.

    It declares ``take_rejected`` and ``end_of_input`` (refusing nothing) only so that the
    sink operator calls its ``end_of_input``, as it does a PostgreSQL sink's.

    Attributes:
        outcome: ``"inserted"``, ``"blocked"`` (the key stayed held), or ``None``.
    """

    def __init__(self, dsn: str, table: str, when: Moment) -> None:
        self.dsn = dsn
        self.table = table
        self.when = when
        self.outcome: str | None = None

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> Interloper:
        """One writer for every subtask: the state is this client's, not the job's."""
        return self

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Ignores the job's records."""

    def end_of_input(self) -> None:
        """Act now, if asked to at the end of input."""
        if self.when == "end_of_input":
            self._act()

    def pre_commit(self, checkpoint_id: int) -> None:
        """Act now, if asked to at the barrier."""
        if self.when == "pre_commit":
            self._act()

    def _act(self) -> None:
        if self.outcome is not None or self.insert(commit=False):
            return
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
        self.outcome = "inserted" if self.insert(commit=True) else "blocked"

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

    def take_rejected(self) -> list[RejectedRecord]:
        """Refuses nothing."""
        return []

    def commit(self, checkpoint_id: int) -> None:
        """Nothing to commit."""

    def finish(self) -> None:
        """Nothing to finish."""

    def close(self) -> None:
        """Holds no connection."""


def make_table_and_topic(tmp_path: Path, dsn: str) -> None:
    """A fresh table ``late`` (``id`` unique, ``v`` NOT NULL) and topic ``refused``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS late")
        conn.execute("CREATE TABLE late (id int PRIMARY KEY, v int NOT NULL)")
    with EventLog(tmp_path / "log") as lg:
        lg.create_topic("refused", 1)


def run_job(
    tmp_path: Path,
    dsn: str,
    exactly_once: str,
    rows: list[tuple[int, int | None]],
    interloper: Interloper,
    **options: Any,
) -> JobResult:
    """``rows`` into table ``late`` at parallelism 2, the dead letters rebalanced into topic
    ``refused`` of an event log; one checkpoint only, the final one (the interval is an
    hour); three restarts allowed unless ``options`` say otherwise."""
    flow = Dataflow(f"pg_late_{exactly_once}")
    refused = (
        flow.source(IterableSource(rows))
        .sink(PostgresSink(dsn, "late", exactly_once=exactly_once), name="pg")  # type: ignore[arg-type]
        .dead_letters()
    )
    refused.rebalance().map(lambda d: [*d.value, d.message[:5]], name="letter").sink(
        EventLogSink(tmp_path / "log", "refused"), name="refused"
    )
    refused.sink(interloper, name="interloper")
    options.setdefault("restart", RestartStrategy.fixed_delay(3, timedelta(milliseconds=10)))
    return flow.run(
        2,
        checkpoint=CheckpointConfig(storage=str(tmp_path / "chk"), interval=timedelta(hours=1)),
        **options,
    )


def run_with(
    tmp_path: Path, dsn: str, exactly_once: str, rows: list[tuple[int, int | None]], when: Moment
) -> tuple[Interloper, JobResult]:
    """:func:`run_job` into a fresh table and topic, with an :class:`Interloper` acting at
    ``when``."""
    make_table_and_topic(tmp_path, dsn)
    interloper = Interloper(dsn, "late", when)
    return interloper, run_job(tmp_path, dsn, exactly_once, rows, interloper)


def table_rows(dsn: str) -> list[tuple[int, int]]:
    with psycopg.connect(dsn) as conn:
        return [(int(i), int(v)) for i, v in conn.execute("SELECT id, v FROM late ORDER BY id")]


def dead_letters(tmp_path: Path) -> list[list[Any]]:
    """The committed records of topic ``refused``, as ``[id, v, sqlstate]``."""
    with EventLog(tmp_path / "log") as lg:
        return sorted(json.loads(r.value) for r in lg.read("refused", 0, 0, max_records=1000))  # type: ignore[arg-type]


MODES = ["transactional", "two_phase"]


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_row_refused_in_the_last_interval_is_dead_lettered_once(
    tmp_path: Path, pg_server: PgServer, exactly_once: str
) -> None:
    """Scenario: the last interval holds a NULL the table refuses; only the final checkpoint
    commits it. The sink writes the interval at the end of input, uncommitted, so its dead
    letter leaves before the end of input does, and is committed once."""
    rows = [(i, None if i == NULL_ROW else i) for i in range(N)]
    _, result = run_with(tmp_path, pg_server.dsn, exactly_once, rows, "never")
    assert table_rows(pg_server.dsn) == [(i, i) for i in range(N) if i != NULL_ROW]
    assert dead_letters(tmp_path) == [[NULL_ROW, None, "23502"]]
    assert result.restarts == 0


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_key_taken_between_end_of_input_and_the_final_barrier(
    tmp_path: Path, pg_server: PgServer, exactly_once: str
) -> None:
    """Scenario: the sink wrote the last interval at the end of input; its link is cut and
    another client commits key TAKEN before the final checkpoint's pre-commit, which writes
    the rows again and finds TAKEN refused after the end of input. The attempt fails instead
    of losing the dead letter; the restart (from the start: no checkpoint completed) refuses
    TAKEN in time: its dead letter is committed once, every other row written once."""
    rows = [(i, i) for i in range(N)]
    interloper, result = run_with(tmp_path, pg_server.dsn, exactly_once, rows, "end_of_input")
    assert interloper.outcome == "inserted"
    assert result.restarts == 1
    assert table_rows(pg_server.dsn) == [(i, i) for i in range(TAKEN)] + [(TAKEN, -1)]
    assert dead_letters(tmp_path) == [[TAKEN, TAKEN, "23505"]]


def test_transactional_key_taken_before_the_final_commit(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Scenario: transactional; after the final checkpoint's pre-commit the held
    transaction's link is cut and another client commits key TAKEN. The commit writes the
    rows again and TAKEN is refused: the commit fails (its refusal recorded with the progress
    row), the restart restores the final checkpoint and dead-letters TAKEN before its end of
    input: committed once, every other row written once."""
    rows = [(i, i) for i in range(N)]
    interloper, result = run_with(tmp_path, pg_server.dsn, "transactional", rows, "pre_commit")
    assert interloper.outcome == "inserted"
    assert result.restarts == 1
    assert table_rows(pg_server.dsn) == [(i, i) for i in range(TAKEN)] + [(TAKEN, -1)]
    assert dead_letters(tmp_path) == [[TAKEN, TAKEN, "23505"]]


def test_transactional_key_taken_before_the_final_commit_without_restarts(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Scenario: as above with no restart strategy: the run fails; a second run restoring
    its latest checkpoint (the final one, committed) dead-letters TAKEN from the refusal
    recorded at the commit, once, and writes nothing again."""
    dsn = pg_server.dsn
    rows = [(i, i) for i in range(N)]
    make_table_and_topic(tmp_path, dsn)
    interloper = Interloper(dsn, "late", "pre_commit")
    with pytest.raises(WeirflowError, match="refused 1 row"):
        run_job(tmp_path, dsn, "transactional", rows, interloper, restart=RestartStrategy.none())
    assert interloper.outcome == "inserted" and dead_letters(tmp_path) == []
    run_job(tmp_path, dsn, "transactional", rows, interloper, restore="latest")
    assert table_rows(dsn) == [(i, i) for i in range(TAKEN)] + [(TAKEN, -1)]
    assert dead_letters(tmp_path) == [[TAKEN, TAKEN, "23505"]]


def test_two_phase_prepared_rows_keep_their_keys_until_the_commit(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Scenario: two_phase; between the final checkpoint's PREPARE and its COMMIT PREPARED
    another client cuts idle transactions and tries to insert key TAKEN: the prepared
    transaction keeps the key, the other client has to wait, and the commit writes every row
    once with no dead letter; afterwards the other client's insert is refused."""
    rows = [(i, i) for i in range(N)]
    interloper, result = run_with(tmp_path, pg_server.dsn, "two_phase", rows, "pre_commit")
    assert interloper.outcome == "blocked" and result.restarts == 0
    assert table_rows(pg_server.dsn) == rows
    assert dead_letters(tmp_path) == []
    with pytest.raises(psycopg.errors.UniqueViolation):
        interloper.insert(commit=True)
