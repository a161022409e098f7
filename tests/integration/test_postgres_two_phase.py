"""PostgresSink's exactly-once writers against a private server with prepared transactions:
fencing of a zombie writer and the restore of prepared transactions (two-phase mode); the
transaction held from the barrier to the checkpoint's completion, and rows the table refuses
only at commit time (transactional mode)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import (  # noqa: E402, F401
    PgServer,
    copy_backends,
    pg_server_fixture,
    terminate_backend,
)
from weirflow.connectors import PostgresFencedError, PostgresSink, PostgresSinkError  # noqa: E402


def make_table(dsn: str, name: str, constraint: str = "CHECK (v >= 0)") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (id int NOT NULL, v int NOT NULL {constraint})")


def ids(dsn: str, name: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f"SELECT id FROM {name} ORDER BY id")]


def prepared(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts ORDER BY gid")]


def rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": i, "v": i} for i in range(start, stop)]


@pytest.mark.parametrize("stream_rows", [True, False], ids=["streamed", "in-statements"])
def test_a_zombie_writers_prepared_transaction_is_rolled_back(
    pg_server: PgServer, stream_rows: bool
) -> None:
    """Scenario: writer A prepares checkpoints 1 and 2; only 1 completed. Writer B restores
    checkpoint 1: it commits 1, rolls back A's prepared 2, and fences A, whose later commit
    fails, and so does its next write (streamed: the stream's transaction checks the epoch)
    or its next pre-commit (buffered: the database sees the rows at the barrier); nothing
    of checkpoint 2 is ever visible."""
    dsn = pg_server.dsn
    make_table(dsn, "zombie")
    sink = PostgresSink(dsn, "zombie", exactly_once="two_phase", stream_rows=stream_rows)
    a = sink.create_writer("job", "out", 0, 1, None)
    a.write(rows(0, 10), None)
    state1 = a.pre_commit(1)
    a.write(rows(10, 20), None)
    a.pre_commit(2)
    assert len(prepared(dsn)) == 2 and ids(dsn, "zombie") == []

    b = sink.create_writer("job", "out", 0, 1, {0: state1})
    assert ids(dsn, "zombie") == list(range(10))
    assert prepared(dsn) == []

    with pytest.raises(PostgresSinkError, match="gone and was never committed"):
        a.commit(2)
    with pytest.raises(PostgresFencedError, match="fenced"):
        a.write(rows(20, 30), None)
        a.pre_commit(3)
    b.write(rows(30, 40), None)
    b.pre_commit(2)
    b.commit(2)
    assert ids(dsn, "zombie") == [*range(10), *range(30, 40)]
    a.close()
    b.close()


def test_restore_commits_prepared_transactions_once(pg_server: PgServer) -> None:
    """Scenario: a writer dies after checkpoint 1 completed but before its commit; the restore
    commits the prepared transaction; restoring the same checkpoint again commits nothing twice."""
    dsn = pg_server.dsn
    make_table(dsn, "restore_once")
    sink = PostgresSink(dsn, "restore_once", exactly_once="two_phase")
    a = sink.create_writer("job", "out", 0, 1, None)
    a.write(rows(0, 5), None)
    state1 = a.pre_commit(1)
    a.close()  # dies before commit(1)
    for _ in range(2):
        w = sink.create_writer("job", "out", 0, 1, {0: state1})
        w.close()
    assert ids(dsn, "restore_once") == list(range(5))
    assert prepared(dsn) == []


def break_held_transactions(dsn: str) -> int:
    """Terminate the backends idle in a transaction (the sink's held one): its link breaks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()"
        ).fetchone()
        return int(row[0]) if row else 0


def test_rows_refused_at_commit_time_fail_the_commit_and_are_dead_lettered_on_restore(
    pg_server: PgServer,
) -> None:
    """Scenario: the checkpoint's rows are written at the barrier in a held transaction; its
    link breaks, and another client takes id 2 before the checkpoint completes. The commit
    writes the rows again, id 2 is refused: the commit fails loudly (retriable) instead of
    emitting a dead letter that no later checkpoint would carry (it may have been the job's
    final one), and the restore of that checkpoint dead-letters id 2 with SQLSTATE 23505,
    once; the other rows are written once."""
    dsn = pg_server.dsn
    make_table(dsn, "late", ", UNIQUE (id)")
    sink = PostgresSink(dsn, "late")
    a = sink.create_writer("job", "out", 0, 1, None)
    a.write([(1, 10), (2, 20), (3, 30)], None)
    state1 = a.pre_commit(1)
    assert a.take_rejected() == [] and ids(dsn, "late") == []
    assert break_held_transactions(dsn) == 1
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("INSERT INTO late VALUES (2, -1)")

    with pytest.raises(PostgresSinkError, match="refused 1 row") as failed:
        a.commit(1)
    assert failed.value.retriable
    assert a.take_rejected() == []
    a.close()
    assert ids(dsn, "late") == [1, 2, 3]

    for _ in range(2):  # a restore of the same checkpoint, twice: the same dead letter
        b = sink.create_writer("job", "out", 0, 1, {0: state1})
        letters = b.take_rejected()
        assert [(list(r.value), r.error.sqlstate) for r in letters] == [([2, 20], "23505")]
        b.close()
    assert ids(dsn, "late") == [1, 2, 3]


def test_a_deferred_constraint_refuses_rows_at_the_barrier(pg_server: PgServer) -> None:
    """Scenario: the table's unique key is DEFERRABLE INITIALLY DEFERRED and the interval holds
    id 5 twice. The sink checks constraints per row, so the second id 5 is refused at the
    barrier (its dead letter belongs to that checkpoint), and the commit succeeds."""
    dsn = pg_server.dsn
    make_table(dsn, "deferred", ", UNIQUE (id) DEFERRABLE INITIALLY DEFERRED")
    w = PostgresSink(dsn, "deferred").create_writer("job", "out", 0, 1, None)
    w.write([(4, 1), (5, 1), (5, 2), (6, 1)], None)
    w.pre_commit(1)
    assert [(list(r.value), r.error.sqlstate) for r in w.take_rejected()] == [([5, 2], "23505")]
    w.commit(1)
    assert ids(dsn, "deferred") == [4, 5, 6]
    w.close()


def test_two_pending_checkpoints_with_the_same_key_commit_in_order(pg_server: PgServer) -> None:
    """Scenario: upsert; checkpoint 2's barrier comes before checkpoint 1 completed, and both
    intervals hold key 1. Checkpoint 2's rows are not written beside 1's held transaction
    (they would wait for its lock, which only the same thread can release); completing 2
    commits 1, then writes 2: key 1 has checkpoint 2's value."""
    dsn = pg_server.dsn
    make_table(dsn, "pending", ", PRIMARY KEY (id)")
    sink = PostgresSink(dsn, "pending", mode="upsert", key_columns=("id",))
    w = sink.create_writer("job", "out", 0, 1, None)
    w.write([(1, 10), (2, 20)], None)
    w.pre_commit(1)
    w.write([(1, 11), (3, 30)], None)
    w.pre_commit(2)
    w.commit(2)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT id, v FROM pending ORDER BY id").fetchall() == [
            (1, 11),
            (2, 20),
            (3, 30),
        ]
    w.close()


def test_rows_stream_into_the_prepared_transaction_and_a_cut_stream_is_written_again(
    pg_server: PgServer,
) -> None:
    """Scenario: a two-phase writer gets rows before its barrier: a COPY is already under
    way and the table shows none of them; that backend is terminated, more rows come (the
    stream is dropped with its transaction), and the barrier writes the whole interval into
    a new transaction and prepares it: every row once after the commit, and the next
    interval streams again."""
    app = f"wf_2pc_stream_{os.getpid()}"
    dsn = pg_server.dsn
    make_table(dsn, "streamed")
    sink = PostgresSink(f"{dsn} application_name={app}", "streamed", exactly_once="two_phase")
    w = sink.create_writer("job", "out", 0, 1, None)
    w.write(rows(0, 100), None)
    ((pid, _),) = copy_backends(dsn, app)
    assert ids(dsn, "streamed") == []
    terminate_backend(dsn, pid)
    w.write(rows(100, 200), None)
    assert copy_backends(dsn, app) == []
    w.pre_commit(1)
    assert len(prepared(dsn)) == 1 and ids(dsn, "streamed") == []
    w.commit(1)
    assert ids(dsn, "streamed") == list(range(200))
    w.write(rows(200, 300), None)
    assert len(copy_backends(dsn, app)) == 1
    w.pre_commit(2)
    w.commit(2)
    assert ids(dsn, "streamed") == list(range(300)) and prepared(dsn) == []
    w.close()


def test_rows_refused_in_a_streamed_prepared_interval_are_dead_lettered(
    pg_server: PgServer,
) -> None:
    """Scenario: a streamed two-phase interval holds a negative value (CHECK), a NULL (NOT
    NULL) and a text where an int belongs (type): the COPY fails at the barrier, the
    interval is written again without those three, which are set aside with their
    SQLSTATE, and the prepared transaction commits every other row once."""
    dsn = pg_server.dsn
    make_table(dsn, "poisoned")
    w = PostgresSink(dsn, "poisoned", exactly_once="two_phase").create_writer(
        "job", "out", 0, 1, None
    )
    bad = {3: -1, 6: None, 8: "eight"}
    w.write([(i, bad.get(i, i)) for i in range(5)], None)
    w.write([(i, bad.get(i, i)) for i in range(5, 10)], None)
    w.pre_commit(1)
    refused = {r.value[0]: r.error.sqlstate for r in w.take_rejected()}
    assert refused == {3: "23514", 6: "23502", 8: "22P02"}
    w.commit(1)
    assert ids(dsn, "poisoned") == [0, 1, 2, 4, 5, 7, 9]
    w.close()
