"""A recovery-test job: per user, 1-second tumbling windows of (count, sum), event log in, one
or more PostgreSQL tables out (the same results into each), and the rows each table refuses
into the log's topic ``refused_<table>``.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log with topic ``events``), ``WF_PG_DSN``,
``WF_PG_SINKS`` (``table:exactly_once:mode`` separated by commas, with
``exactly_once`` ``transactional``/``two_phase`` and ``mode``
``append``/``upsert``), ``WF_PG_BREAKER_RESET_MS`` (the circuit breaker's
reset timeout), ``WF_THROTTLE_US`` (see :mod:`windowed_sum_core`).
A database call may take 1.5 s at most, a connection attempt 2 s; the breaker
opens after 2 consecutive failures.
"""

import os
from datetime import timedelta

from windowed_sum_core import CountSum, user_amounts

from weirflow import Dataflow, RetryPolicy
from weirflow.connectors import (
    CircuitBreaker,
    EventLogSink,
    EventLogSource,
    PostgresSink,
    Resilience,
)
from weirflow.windows import TumblingWindows

flow = Dataflow("pg_windowed_sum")
results = (
    user_amounts(flow, EventLogSource(os.environ["WF_LOG_DIR"], "events"))
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountSum(), name="per_user")
)
for spec in os.environ["WF_PG_SINKS"].split(","):
    table, exactly_once, mode = spec.split(":")
    refused = results.sink(
        PostgresSink(
            os.environ["WF_PG_DSN"],
            table,
            columns=("user_id", "window_start", "window_end", "events", "total"),
            encode=lambda r: (r.key, r.start_ms, r.end_ms, r.value[0], r.value[1]),
            mode=mode,  # type: ignore[arg-type]
            key_columns=("user_id", "window_start") if mode == "upsert" else (),
            exactly_once=exactly_once,  # type: ignore[arg-type]
            batch_size=200,
            connect_timeout=timedelta(seconds=2),
            resilience=Resilience(
                retry=RetryPolicy(
                    max_attempts=200,
                    initial_backoff=timedelta(milliseconds=50),
                    max_backoff=timedelta(milliseconds=500),
                ),
                call_timeout=timedelta(milliseconds=1500),
                breaker=CircuitBreaker(
                    failure_threshold=2,
                    reset_timeout=timedelta(
                        milliseconds=int(os.environ.get("WF_PG_BREAKER_RESET_MS", "500"))
                    ),
                ),
            ),
        ),
        name=f"results_{table}",
    ).dead_letters()
    # Rows the table refuses (its CHECK), with their SQLSTATE, into their topic exactly once.
    refused.map(lambda d: [*d.value, d.message[:5]], name=f"refused_row_{table}").sink(
        EventLogSink(os.environ["WF_LOG_DIR"], f"refused_{table}"), name=f"refused_{table}"
    )
