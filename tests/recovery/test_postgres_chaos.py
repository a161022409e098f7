"""Crash-and-recover tests of PostgresSink against a private PostgreSQL server: SIGKILL the job
under ``weirflow run``, stop or pause the database; the table must hold exactly the batch answer."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_helpers import make_input, supervised_args
from prometheus_client.parser import text_string_to_metric_families

from weirflow.eventlog import EventLog
from weirflow.testing import ChaosConfig, ChaosReport, run_under_chaos

sys.path.insert(0, str(Path(__file__).parents[1]))
from pg_server import PgServer, pg_server_fixture  # noqa: F401

pytestmark = pytest.mark.slow

JOB = str(Path(__file__).parent / "jobs" / "postgres_windowed_sum.py")
#: Input events of a run.
N = 24_000

Result = tuple[str, int, int, int, int]


#: The table refuses window results whose total is a multiple of this (a CHECK), so that
#: every run also dead-letters rows, and they must come out exactly once too.
REFUSED_MULTIPLE = 23


def make_table(dsn: str, table: str, upsert: bool) -> None:
    """(Re)create the result table; upsert mode gets a primary key on (user, window)."""
    key = ", PRIMARY KEY (user_id, window_start)" if upsert else ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (user_id text NOT NULL, window_start bigint NOT NULL, "
            f"window_end bigint NOT NULL, events bigint NOT NULL, total bigint NOT NULL "
            f"CHECK (total % {REFUSED_MULTIPLE} <> 0){key})"
        )


def refused_rows(log_dir: Path, table: str) -> Counter[tuple[Any, ...]]:
    """The committed records of topic ``refused_<table>``: ``(*row, sqlstate)`` as a multiset."""
    out: Counter[tuple[Any, ...]] = Counter()
    with EventLog(log_dir) as lg:
        pos = 0
        while batch := lg.read(f"refused_{table}", 0, pos, max_records=5000):
            out.update(tuple(json.loads(r.value)) for r in batch)  # type: ignore[arg-type]
            pos = batch[-1].offset + 1
    return out


def split_expected(expected: Counter[Result]) -> tuple[Counter[Result], Counter[tuple[Any, ...]]]:
    """The batch answer split into the rows the table keeps and the ones it refuses."""
    kept = Counter({r: n for r, n in expected.items() if r[4] % REFUSED_MULTIPLE})
    refused = Counter(
        {(*r, "23514"): n for r, n in expected.items() if r[4] % REFUSED_MULTIPLE == 0}
    )
    return kept, refused


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
    chaos: ChaosConfig,
    sinks: list[tuple[str, str]],
    *,
    n: int = N,
    throttle_us: int = 60,
    breaker_reset_ms: int = 500,
    during: threading.Thread | None = None,
    faults: str = "",
    extra_args: tuple[str, ...] = (),
) -> tuple[Counter[Result], ChaosReport, list[str]]:
    """Run the job under ``chaos`` with one PostgresSink per ``(exactly_once, mode)`` of
    ``sinks``, each into its own fresh table; return the batch answer, the report and the
    tables."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, n, seed)
    tables = [f"chaos_{exactly_once}_{mode}" for exactly_once, mode in sinks]
    with EventLog(log_dir) as lg:
        for table in tables:
            lg.create_topic(f"refused_{table}", 1)
    for table, (_, mode) in zip(tables, sinks, strict=True):
        make_table(server.dsn, table, mode == "upsert")
    env = dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WF_PG_DSN=server.dsn,
        WF_PG_SINKS=",".join(f"{t}:{e}:{m}" for t, (e, m) in zip(tables, sinks, strict=True)),
        WF_PG_BREAKER_RESET_MS=str(breaker_reset_ms),
        WF_THROTTLE_US=str(throttle_us),
    )
    if faults:
        env["WEIRFLOW_FAULTS"] = faults
        env["WEIRFLOW_FAULT_SEED"] = str(seed)
    if during is not None:
        during.start()
    report = run_under_chaos(
        JOB,
        supervised_args(tmp_path / "chk", 2, "exactly_once", *extra_args),
        chaos,
        log_path=tmp_path / "chaos.log",
        env=env,
    )
    if during is not None:
        during.join()
    return expected, report, tables


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, name: str) -> list[float]:
    """The values of metric ``name`` on the coordinator's /metrics (empty when unreachable)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return []
    return [
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name
    ]


def wait_for_checkpoint(tmp_path: Path, n: int, timeout_s: float = 60) -> None:
    """Wait until the job's checkpoint ``n`` (or a newer one) completed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [int(p.parent.name[4:]) for p in tmp_path.glob("chk/*/chk-*/_manifest")]
        if done and max(done) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {n} within {timeout_s} s")


def assert_exact(
    tmp_path: Path, server: PgServer, table: str, expected: Counter[Result], info: str
) -> None:
    """The table holds the batch answer's accepted rows and topic ``refused`` the others
    with their SQLSTATE: none missing, none twice, in either."""
    kept, refused = split_expected(expected)
    assert refused, "the input has no row for the table to refuse"
    got = table_rows(server.dsn, table)
    assert got == kept, f"table: missing {kept - got}, extra {got - kept}; {info}"
    letters = refused_rows(tmp_path / "log", table)
    assert letters == refused, f"refused: missing {refused - letters}, extra {letters - refused}"


def kills_in(report: ChaosReport) -> int:
    """SIGKILLs of workers in the run: the chaos monkey's and the fault points' own."""
    return report.log.count("(signal 9)")


#: Fault points that SIGKILL the worker inside the checkpoint protocol: after the
#: manifest is written and before the sinks commit, in the commit, in the pre-commit
#: (probabilities per visit: each of the 12 sink subtasks visits the last two per checkpoint).
PROTOCOL_FAULTS = "after_manifest=0.02,sink_commit=0.004,pre_commit=0.002"
#: Kills by the chaos monkey, at random 0.3-1.2 s after each (re)start of the worker.
KILLS = 30


def test_postgres_sinks_exactly_once_under_worker_kills(
    tmp_path: Path, pg_server: PgServer, chaos_seed: int
) -> None:
    """Scenario: one job writes the same window results into three tables (transactional
    append, two_phase append, transactional upsert); its worker is SIGKILLed 30 times at random
    and more at checkpoint protocol phases. Each table holds the batch answer's rows, the rows
    its CHECK refuses are dead-lettered with SQLSTATE 23514, none missing and none twice in
    either, and no prepared transaction is left."""
    expected, report, tables = _run(
        tmp_path,
        pg_server,
        chaos_seed,
        ChaosConfig(
            kills=KILLS, seed=chaos_seed, target="worker", min_delay_s=0.3, max_delay_s=1.2
        ),
        [("transactional", "append"), ("two_phase", "append"), ("transactional", "upsert")],
        n=40_000,
        throttle_us=100,
        faults=PROTOCOL_FAULTS,
    )
    info = report.describe()
    assert report.exit_code == 0, info
    assert kills_in(report) >= KILLS, f"too few kills landed: {info}"
    for table in tables:
        assert_exact(tmp_path, pg_server, table, expected, info)
    assert prepared(pg_server.dsn) == [], info
    print(f"{kills_in(report)} kills, {report.kill_times_s[-1]:.0f} s to the last: {tables}")


# the outage: long enough for several checkpoints to be tried and retries to back off
OUTAGE_S = 20.0


def test_database_crash_and_pause_mid_run(
    tmp_path: Path, pg_server: PgServer, chaos_seed: int
) -> None:
    """Scenario: mid-run the database crashes (pg_ctl stop -m immediate) and comes back
    ``OUTAGE_S`` (20 s) later; later every server process is SIGSTOPped for 20 s. Both
    times the breaker opens (the paused server's calls overrun their deadline and are cut),
    the sink waits instead of the job crash-looping, the job resumes by itself, and the
    output is exact."""

    port = free_port()
    breaker_states: dict[str, set[float]] = {"crash": set(), "pause": set()}

    def watch(phase: str, seconds: float) -> None:
        # the coordinator's /metrics, fed by the workers' heartbeats, while the sinks wait
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            breaker_states[phase] |= set(scrape(port, "weirflow_connector_breaker_state"))
            time.sleep(0.2)

    def outages() -> None:
        wait_for_checkpoint(tmp_path, 2)
        pg_server.stop("immediate")
        watch("crash", OUTAGE_S)
        pg_server.start()
        done = max(int(p.parent.name[4:]) for p in tmp_path.glob("chk/*/chk-*/_manifest"))
        wait_for_checkpoint(tmp_path, done + 3)
        pg_server.pause()
        watch("pause", OUTAGE_S)
        pg_server.resume()

    expected, report, (table,) = _run(
        tmp_path,
        pg_server,
        chaos_seed,
        ChaosConfig(kills=0, seed=chaos_seed, target="worker"),
        [("two_phase", "append")],
        breaker_reset_ms=1000,
        during=threading.Thread(target=outages),
        extra_args=("--workers=2", f"--metrics-port={port}"),
    )
    info = report.describe()
    assert_exact(tmp_path, pg_server, table, expected, info)
    crash, _, pause = report.log.partition("its connection was cut")
    assert "breaker open, retrying" in crash, f"the breaker did not open in the crash: {info}"
    assert "breaker open, retrying" in pause, f"the breaker did not open in the pause: {info}"
    assert "worker failed" not in report.log, f"the job restarted instead of waiting: {info}"
    assert prepared(pg_server.dsn) == [], info
    # 2 = open, as /metrics showed it during each outage
    assert 2 in breaker_states["crash"] and 2 in breaker_states["pause"], breaker_states
