"""PostgresSink's two-phase mode against a private server with prepared transactions:
fencing of a zombie writer and the restore of prepared transactions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import PgServer, pg_server_fixture  # noqa: E402, F401
from weirflow.connectors import PostgresFencedError, PostgresSink, PostgresSinkError  # noqa: E402


def make_table(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (id int NOT NULL, v int NOT NULL CHECK (v >= 0))")


def ids(dsn: str, name: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f"SELECT id FROM {name} ORDER BY id")]


def prepared(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts ORDER BY gid")]


def rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": i, "v": i} for i in range(start, stop)]


def test_a_zombie_writers_prepared_transaction_is_rolled_back(pg_server: PgServer) -> None:
    """Scenario: writer A prepares checkpoints 1 and 2; only 1 completed. Writer B restores
    checkpoint 1: it commits 1, rolls back A's prepared 2, and fences A, whose later commit
    and writes fail; nothing of checkpoint 2 is ever visible."""
    dsn = pg_server.dsn
    make_table(dsn, "zombie")
    sink = PostgresSink(dsn, "zombie", exactly_once="two_phase")
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
