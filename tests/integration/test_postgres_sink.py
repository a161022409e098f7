"""PostgresSink against the machine's PostgreSQL server (127.0.0.1:5432, database ``test``):
dead-lettered poison rows, upsert, at-least-once, and one-line errors for bad input."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import copy_backends, terminate_backend  # noqa: E402
from weirflow import CheckpointConfig, Dataflow, DeadLetter  # noqa: E402
from weirflow.connectors import (  # noqa: E402
    CollectSink,
    IterableSource,
    PostgresSink,
    PostgresSinkError,
)
from weirflow.errors import ConfigError, WeirflowError  # noqa: E402

DSN = "host=127.0.0.1 port=5432 dbname=test"


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    """A fresh table ``(id int primary key, v int NOT NULL CHECK (v >= 0), s text)``."""
    name = f"wf_pg_{os.getpid()}_{abs(hash(request.node.name)) % 10**8}"
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL at {DSN}: {e}")
    with conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(
            f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL CHECK (v >= 0), s text)"
        )
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def rows_of(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(DSN) as conn:
        return conn.execute(f"SELECT id, v, s FROM {table} ORDER BY id").fetchall()


def poison_input(n: int) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """``n`` records; some violate NOT NULL, the CHECK, or the integer type. Returns the
    records and id → the SQLSTATE each poison record must be dead-lettered with."""
    records, poison = [], {}
    for i in range(n):
        v: Any = i
        if i % 50 == 7:
            v, poison[i] = None, "23502"  # not_null_violation
        elif i % 50 == 19:
            v, poison[i] = -i, "23514"  # check_violation
        elif i % 50 == 33:
            v, poison[i] = f"x{i}", "22P02"  # invalid_text_representation
        records.append({"id": i, "v": v, "s": f"s{i}"})
    return records, poison


def run_into(
    table: str,
    records: list[dict[str, Any]],
    tmp_path: Path | None,
    partitions: int = 3,
    **sink_options: Any,
) -> tuple[list[DeadLetter], Any]:
    flow = Dataflow("pg_poison")
    letters = CollectSink()
    (
        flow.source(IterableSource(records, partitions=partitions))
        .sink(PostgresSink(DSN, table, batch_size=64, **sink_options), name="pg")
        .dead_letters()
        .sink(letters, name="letters")
    )
    options: dict[str, Any] = {}
    if tmp_path is not None:
        options["checkpoint"] = CheckpointConfig(
            storage=str(tmp_path / "chk"), interval=timedelta(milliseconds=20)
        )
    result = flow.run(2, **options)
    return letters.results, result


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_poison_rows_are_dead_lettered_with_their_sqlstate(
    table: str, tmp_path: Path, guarantee: str
) -> None:
    """Scenario: rows violating NOT NULL, a CHECK and the column type are dead-lettered with
    their SQLSTATE; every other row is written exactly once; the counts balance."""
    records, poison = poison_input(3000)
    letters, result = run_into(table, records, tmp_path, guarantee=guarantee)

    got = {d.value[0]: d.message[:5] for d in letters}
    assert got == poison
    assert all(d.operator == "pg" and "PostgresSink" not in d.message for d in letters)
    written = rows_of(table)
    assert written == [(i, i, f"s{i}") for i in range(3000) if i not in poison]
    counts = result.operators["pg"]
    assert counts.records_in == len(written) + counts.dead_lettered
    assert counts.dead_lettered == len(poison)


def test_upsert_replaces_rows_by_key(table: str) -> None:
    """Scenario: ten records per key, in order in one split, are upserted; the last wins."""
    records = [{"id": i % 100, "v": i, "s": "x"} for i in range(1000)]
    letters, _ = run_into(table, records, None, partitions=1, mode="upsert", key_columns=("id",))
    assert letters == []
    assert rows_of(table) == [(k, 900 + k, "x") for k in range(100)]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"dsn": "host=127.0.0.1 port=5432 dbname=no_such_db"}, "no_such_db"),
        ({"dsn": "host=127.0.0.1 port=1 dbname=test"}, "Connection refused"),
        ({"table": "no_such_table"}, "does not exist"),
        ({"columns": ("id", "value")}, "has no column(s) ['value']"),
        ({"mode": "upsert", "key_columns": ("s",)}, "no primary key or unique constraint"),
        ({"exactly_once": "two_phase"}, "max_prepared_transactions"),
    ],
)
def test_bad_input_fails_at_job_start_with_one_line(
    table: str, options: dict[str, Any], problem: str
) -> None:
    """Scenario: a wrong DSN, a missing table, an unknown column, no key for upsert, or two
    phase on a server without prepared transactions: a one-line error before any record."""
    seen: list[Any] = []

    def count(x: Any) -> Any:
        seen.append(x)
        return x

    dsn = options.pop("dsn", DSN)
    target = options.pop("table", table)
    flow = Dataflow("pg_bad")
    flow.source(IterableSource([{"id": 1, "v": 1, "s": "a"}])).map(count).sink(
        PostgresSink(dsn, target, **options)
    )
    with pytest.raises(WeirflowError) as info:
        flow.run(1)
    message = str(info.value)
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__
    assert cause is not None, message
    assert problem in str(cause) and "\n" not in str(cause), str(cause)
    assert seen == []
    assert rows_of(table) == []


def test_bad_options_are_refused_when_the_sink_is_built() -> None:
    """Scenario: inconsistent options fail when the sink is constructed, with one line each."""
    with pytest.raises(ConfigError, match="key_columns"):
        PostgresSink(DSN, "t", mode="upsert")
    with pytest.raises(ConfigError, match="create_table=True needs columns"):
        PostgresSink(DSN, "t", create_table=True)
    with pytest.raises(ConfigError, match="exactly_once must be"):
        PostgresSink(DSN, "t", exactly_once="xa")  # type: ignore[arg-type]


def test_create_table_and_mismatched_record_fields(tmp_path: Path) -> None:
    """Scenario: create_table makes the table from column types; a record with a field the
    table has no column for fails the job with a message naming the field."""
    name = f"wf_pg_created_{os.getpid()}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    try:
        flow = Dataflow("pg_create")
        flow.source(IterableSource([{"k": "a", "n": 1}, {"k": "b", "n": 2}])).sink(
            PostgresSink(DSN, name, columns={"k": "text", "n": "bigint"}, create_table=True)
        )
        flow.run(1)
        with psycopg.connect(DSN) as conn:
            assert conn.execute(f"SELECT k, n FROM {name} ORDER BY k").fetchall() == [
                ("a", 1),
                ("b", 2),
            ]
        flow = Dataflow("pg_extra")
        flow.source(IterableSource([{"k": "c", "n": 3, "oops": 1}])).sink(PostgresSink(DSN, name))
        with pytest.raises(WeirflowError, match="oops"):
            flow.run(1)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_metrics_count_rows_written_and_rejected_by_sqlstate(table: str) -> None:
    """Scenario: a run with poison rows publishes rows written, rows rejected by SQLSTATE and
    the breaker state (closed) of the sink."""
    from weirflow.graph import compile_plan  # noqa: F401  (imported for the runtime's plan)
    from weirflow.metrics import CheckpointTracker, JobRegistry, RuntimeCollector
    from weirflow.runtime import RuntimeOptions, run_unchecked

    records, poison = poison_input(500)
    flow = Dataflow("pg_metrics")
    flow.source(IterableSource(records, partitions=2)).sink(
        PostgresSink(DSN, table, batch_size=64), name="pg"
    )
    metrics = JobRegistry("pg_metrics")
    now = [1_000_000]
    collector = RuntimeCollector(metrics, CheckpointTracker(metrics, lambda: now[0]), 500)
    run_unchecked(
        flow.graph,
        2,
        128,
        RuntimeOptions(),
        clock=lambda: now[0],
        scheduler_hook=lambda s: collector.attach(s.tasks),
    )
    status = collector.sample(now[0])

    def total(name: str, **labels: str) -> float:
        return sum(
            metrics.registry.get_sample_value(
                name, {"job": "pg_metrics", "operator": "pg", "subtask": str(i), **labels}
            )
            or 0.0
            for i in range(2)
        )

    assert total("weirflow_sink_rows_written_total") == 500 - len(poison)
    for code in ("23502", "23514", "22P02"):
        expected = sum(1 for c in poison.values() if c == code)
        assert total("weirflow_sink_rows_rejected_total", code=code) == expected
    assert total("weirflow_connector_breaker_state") == 0
    assert total("weirflow_sink_transactions_total") >= 1
    assert total("weirflow_sink_transaction_seconds_total") > 0
    assert {c.stats.breaker for c in status.connectors} == {"closed"}


def _streaming_backends(app: str) -> list[tuple[int, str]]:
    return copy_backends(DSN, app)


@contextmanager
def streaming_writer(table: str, app: str = "") -> Iterator[Any]:
    """A transactional append writer of subtask 0 into ``table``, its connections named
    ``app`` (``application_name``) when given; closed afterwards."""
    dsn = f"{DSN} application_name={app}" if app else DSN
    writer = PostgresSink(dsn, table, columns=("id", "v", "s")).create_writer(
        "streaming", "pg", 0, 1, None
    )
    try:
        yield writer
    finally:
        writer.close()


def span(start: int, end: int) -> list[tuple[int, int, str]]:
    """Rows ``(i, i, "s<i>")`` for ``start <= i < end``."""
    return [(i, i, f"s{i}") for i in range(start, end)]


def test_rows_stream_as_they_arrive_and_a_cut_stream_is_written_at_the_barrier(
    table: str,
) -> None:
    """Scenario: a transactional writer gets rows before its barrier: a COPY on its own
    connection is already under way and the table shows none of them; that connection is
    terminated, more rows come (the stream is dropped, its transaction gone), and the
    barrier writes the whole interval: every row once after the commit, in both intervals."""
    app = f"wf_stream_{os.getpid()}"
    with streaming_writer(table, app) as writer:
        writer.write(span(0, 100), None)
        (streaming,) = _streaming_backends(app)
        assert rows_of(table) == []
        terminate_backend(DSN, streaming[0])
        writer.write(span(100, 200), None)
        assert _streaming_backends(app) == []
        writer.pre_commit(1)
        writer.commit(1)
        assert rows_of(table) == span(0, 200)
        # the next interval streams again, on a new connection
        writer.write(span(200, 300), None)
        assert len(_streaming_backends(app)) == 1
        writer.pre_commit(2)
        writer.commit(2)
        assert rows_of(table) == span(0, 300)


def test_a_row_refused_in_a_streamed_interval_is_dead_lettered_the_rest_written_once(
    table: str,
) -> None:
    """Scenario: a streamed interval holds a NULL and a key the table already has: the COPY
    fails at the barrier, the interval is written again without those two, which are set
    aside with their SQLSTATE; the commit writes the other rows once."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (5, 5, 'old')")
    with streaming_writer(table) as writer:
        rows = [(i, None if i == 7 else i, f"s{i}") for i in range(10, 0, -1)]
        writer.write(rows[:5], None)
        writer.write(rows[5:], None)
        writer.pre_commit(1)
        refused = {r.value[0]: r.error.sqlstate for r in writer.take_rejected()}
        assert refused == {7: "23502", 5: "23505"}
        writer.commit(1)
        assert rows_of(table) == sorted(
            [(5, 5, "old")] + [r for r in span(1, 11) if r[0] not in (5, 7)]
        )


def test_no_stream_opens_while_a_checkpoint_waits_to_be_written_at_its_commit(
    table: str,
) -> None:
    """Scenario: two checkpoints in flight (``max_concurrent`` 2): the second interval's
    rows wait unwritten for the first transaction's commit; after that commit, rows of a
    third interval come before the second commits: they are not streamed on the
    connection the second checkpoint's rows are then written with. Every row once."""
    app = f"wf_pending_{os.getpid()}"
    with streaming_writer(table, app) as writer:
        writer.write(span(0, 100), None)
        writer.pre_commit(1)
        writer.write(span(100, 200), None)
        writer.pre_commit(2)
        writer.commit(1)
        writer.write(span(200, 300), None)
        assert _streaming_backends(app) == []
        writer.commit(2)
        assert rows_of(table) == span(0, 200)
        writer.write(span(300, 400), None)
        assert len(_streaming_backends(app)) == 1
        writer.pre_commit(3)
        writer.commit(3)
        assert rows_of(table) == span(0, 400)


def _progress_and_backends(writer: Any, app: str) -> tuple[list[int], int]:
    """The checkpoint ids of ``writer``'s progress rows, and how many server connections
    named ``app`` are open."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        ids = conn.execute(
            "SELECT checkpoint_id FROM weirflow_sink_progress WHERE job = 'streaming' "
            "AND sink = 'pg' AND subtask = 0 AND run = %s ORDER BY 1",
            (writer.run,),
        ).fetchall()
        (backends,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone() or (0,)
    return [c for (c,) in ids], int(backends)


def test_a_commit_keeps_only_the_newest_progress_row_pruning_on_an_idle_connection(
    keyless: str,
) -> None:
    """Scenario: four checkpoints of a table without keys commit; after each the writer's
    progress table holds only the newest one. While no stream is open the older rows are
    pruned on the connection the commit just ended (the writer holds one connection);
    while the next interval streams (beside the pending checkpoint), on a second one."""
    app = f"wf_prune_{os.getpid()}"
    with streaming_writer(keyless, app) as writer:
        for c in (1, 2):
            writer.write(span(c * 100, c * 100 + 100), None)
            writer.pre_commit(c)
            writer.commit(c)
            assert _progress_and_backends(writer, app) == ([c], 1)
        writer.write(span(300, 400), None)
        writer.pre_commit(3)
        writer.write(span(400, 500), None)
        assert len(_streaming_backends(app)) == 1
        writer.commit(3)
        assert _progress_and_backends(writer, app) == ([3], 2)
        writer.pre_commit(4)
        writer.commit(4)
        assert rows_of(keyless) == span(100, 500)


@pytest.fixture
def keyless(table: str) -> str:
    """The ``table`` fixture without its primary key: no row written can wait for another
    transaction."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
    return table


def test_rows_may_wait_names_what_can_block_a_row(table: str, keyless: str) -> None:
    """Scenario: a table with no key, foreign key or trigger is the only kind whose rows
    cannot wait for another transaction: adding a unique index, a foreign key or a trigger
    each makes them able to."""
    from weirflow.connectors.postgres.tables import rows_may_wait

    with psycopg.connect(DSN, autocommit=True) as conn:
        assert not rows_may_wait(conn, keyless)
        conn.execute(f"CREATE UNIQUE INDEX {keyless}_s ON {keyless} (s)")
        assert rows_may_wait(conn, keyless)
        conn.execute(f"DROP INDEX {keyless}_s")
        conn.execute(f"CREATE TABLE {keyless}_ref (id int PRIMARY KEY)")
        try:
            conn.execute(f"ALTER TABLE {keyless} ADD FOREIGN KEY (v) REFERENCES {keyless}_ref")
            assert rows_may_wait(conn, keyless)
        finally:
            conn.execute(f"DROP TABLE {keyless}_ref CASCADE")
        assert not rows_may_wait(conn, keyless)
        conn.execute(
            f"CREATE TRIGGER {keyless}_t BEFORE INSERT ON {keyless} FOR EACH ROW "
            "EXECUTE FUNCTION suppress_redundant_updates_trigger()"
        )
        assert rows_may_wait(conn, keyless)


def _idle_in_transaction(app: str) -> list[int]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        return [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                "AND state = 'idle in transaction'",
                (app,),
            )
        ]


def test_a_keyless_table_streams_beside_a_pending_checkpoint(keyless: str) -> None:
    """Scenario: a table no row can wait on; checkpoint 1's transaction is held (pending)
    when the next rows come: they stream at once on another connection, checkpoint 2's
    barrier ends that stream while 1 is still held, and both commit: every row once."""
    app = f"wf_beside_{os.getpid()}"
    with streaming_writer(keyless, app) as writer:
        writer.write(span(0, 100), None)
        writer.pre_commit(1)
        writer.write(span(100, 200), None)
        assert len(_streaming_backends(app)) == 1
        writer.pre_commit(2)
        assert len(_idle_in_transaction(app)) == 2
        assert rows_of(keyless) == []
        writer.commit(2)
        assert rows_of(keyless) == span(0, 200)


def test_a_broken_held_transaction_written_again_takes_the_data_connection_from_a_stream(
    keyless: str,
) -> None:
    """Scenario: beside checkpoint 1's held transaction the next rows stream; 1's link
    breaks, so its commit writes its staged rows again, which needs the data connection
    the stream holds: the stream is dropped, and checkpoint 2's barrier writes its rows.
    Every row once, and the next interval streams again."""
    app = f"wf_rewrite_{os.getpid()}"
    with streaming_writer(keyless, app) as writer:
        writer.write(span(0, 100), None)
        writer.pre_commit(1)
        writer.write(span(100, 200), None)
        (held,) = _idle_in_transaction(app)
        terminate_backend(DSN, held)
        writer.commit(1)
        assert rows_of(keyless) == span(0, 100)
        assert _streaming_backends(app) == []
        writer.write(span(200, 300), None)
        writer.pre_commit(2)
        writer.commit(2)
        assert rows_of(keyless) == span(0, 300)
        writer.write(span(300, 400), None)
        assert len(_streaming_backends(app)) == 1
        writer.pre_commit(3)
        writer.commit(3)
        assert rows_of(keyless) == span(0, 400)


def test_the_end_of_input_beside_a_held_checkpoint_finds_its_refused_rows(table: str) -> None:
    """Scenario: the input ends while checkpoint 1's transaction is still held (a bounded
    job whose last checkpoint has not completed yet) and the last rows hold a NULL: they
    are written at the end of input anyway, beside the held transaction (no key is shared),
    so the NULL is set aside before the operators downstream end; both checkpoints commit
    every other row once."""
    with streaming_writer(table) as writer:
        writer.write(span(0, 100), None)
        writer.pre_commit(1)
        writer.write([(i, None if i == 150 else i, f"s{i}") for i in range(100, 200)], None)
        writer.end_of_input()
        assert [(r.value[0], r.error.sqlstate) for r in writer.take_rejected()] == [(150, "23502")]
        writer.pre_commit(2)
        writer.commit(2)
        assert rows_of(table) == [r for r in span(0, 200) if r[0] != 150]


def test_rows_that_would_wait_for_a_held_checkpoint_are_written_at_their_commit(
    table: str,
) -> None:
    """Scenario: as above, but the last rows repeat a key of checkpoint 1's held
    transaction: written beside it, that row would wait for a commit only this thread can
    make, so the write gives up after its lock timeout and the rows are written when
    checkpoint 2 completes; the repeated key is refused there, which fails that commit
    (retriable), and every other row is written once."""
    with streaming_writer(table) as writer:
        writer.write(span(0, 100), None)
        writer.pre_commit(1)
        writer.write([*span(100, 150), (5, 5, "again")], None)
        writer.end_of_input()
        assert writer.take_rejected() == []
        writer.pre_commit(2)
        with pytest.raises(PostgresSinkError, match="refused 1 row") as failed:
            writer.commit(2)
        assert failed.value.retriable
        assert rows_of(table) == span(0, 150)
