"""Crash-and-recover tests of PostgresSink against a private PostgreSQL server: SIGKILL the job
under ``weirflow run``, stop or pause the database; the table must hold exactly the batch answer."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from chaos_helpers import make_input

from weirflow.testing import ChaosConfig, ChaosReport, run_under_chaos

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import PgServer, pg_server_fixture  # noqa: F401

pytestmark = pytest.mark.slow

JOB = str(Path(__file__).parent / "jobs" / "postgres_windowed_sum.py")
N = 40_000

Result = tuple[str, int, int, int, int]


def make_table(dsn: str, table: str, upsert: bool) -> None:
    """(Re)create the result table; upsert mode gets a primary key on (user, window)."""
    key = ", PRIMARY KEY (user_id, window_start)" if upsert else ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (user_id text NOT NULL, window_start bigint NOT NULL, "
            f"window_end bigint NOT NULL, events bigint NOT NULL, total bigint NOT NULL{key})"
        )


def table_rows(dsn: str, table: str) -> Counter[Result]:
    """Every row of the table as a multiset of window results."""
    with psycopg.connect(dsn) as conn:
        return Counter(
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(
                f"SELECT user_id, window_start, window_end, events, total FROM {table}"
            )
        )


def prepared(dsn: str) -> list[str]:
    """Ids of the server's prepared transactions."""
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts")]


def _run(
    tmp_path: Path,
    server: PgServer,
    seed: int,
    *,
    kills: int,
    exactly_once: str,
    mode: str = "append",
    breaker_reset_ms: int = 500,
    during: threading.Thread | None = None,
) -> tuple[Counter[Result], ChaosReport, str]:
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed)
    table = f"chaos_{exactly_once}_{mode}"
    make_table(server.dsn, table, mode == "upsert")
    env = dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WF_PG_DSN=server.dsn,
        WF_PG_TABLE=table,
        WF_PG_MODE=mode,
        WF_PG_EXACTLY_ONCE=exactly_once,
        WF_PG_BREAKER_RESET_MS=str(breaker_reset_ms),
        WF_THROTTLE_US="60",
    )
    if during is not None:
        during.start()
    report = run_under_chaos(
        JOB,
        [
            "--parallelism=2",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=100ms",
            "--guarantee=exactly_once",
            "--restart-strategy=fixed-delay",
            "--max-restarts=200",
            "--restart-delay=50ms",
        ],
        ChaosConfig(kills=kills, seed=seed, target="worker", min_delay_s=1.5, max_delay_s=2.5),
        log_path=tmp_path / "chaos.log",
        env=env,
    )
    if during is not None:
        during.join()
    return expected, report, table


@pytest.mark.parametrize(
    ("exactly_once", "mode"),
    [("transactional", "append"), ("two_phase", "append"), ("transactional", "upsert")],
)
def test_postgres_sink_exactly_once_under_worker_kills(
    tmp_path: Path, pg_server: PgServer, chaos_seed: int, exactly_once: str, mode: str
) -> None:
    """Scenario: the job's worker is SIGKILLed again and again; the table holds the batch
    answer, no row missing and none twice, and no prepared transaction is left."""
    expected, report, table = _run(
        tmp_path, pg_server, chaos_seed, kills=KILLS, exactly_once=exactly_once, mode=mode
    )
    info = report.describe()
    assert report.kills >= KILLS - 2, f"job ended before the kills landed: {info}"
    got = table_rows(pg_server.dsn, table)
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
    assert prepared(pg_server.dsn) == [], info


KILLS = 8


def test_database_stopped_and_restarted_mid_run(
    tmp_path: Path, pg_server: PgServer, chaos_seed: int
) -> None:
    """Scenario: the database crashes (pg_ctl stop -m immediate) mid-run and comes back 6 s
    later; the breaker opens, the job waits instead of crash-looping, and the output is exact."""

    def outage() -> None:
        time.sleep(1.5)
        pg_server.stop("immediate")
        time.sleep(6)
        pg_server.start()

    expected, report, table = _run(
        tmp_path,
        pg_server,
        chaos_seed,
        kills=0,
        exactly_once="two_phase",
        breaker_reset_ms=1000,
        during=threading.Thread(target=outage),
    )
    info = report.describe()
    got = table_rows(pg_server.dsn, table)
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
    assert "circuit breaker" in report.log or "breaker open" in report.log, info
    assert report.log.count("attempt") < 50, f"restart storm: {info}"


def test_database_paused_mid_run(tmp_path: Path, pg_server: PgServer, chaos_seed: int) -> None:
    """Scenario: every server process is SIGSTOPped for 6 s mid-run, then continued; the job
    resumes by itself and the output is exact."""

    def pause() -> None:
        time.sleep(1.5)
        pg_server.pause()
        time.sleep(6)
        pg_server.resume()

    expected, report, table = _run(
        tmp_path,
        pg_server,
        chaos_seed,
        kills=0,
        exactly_once="transactional",
        during=threading.Thread(target=pause),
    )
    info = report.describe()
    got = table_rows(pg_server.dsn, table)
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
