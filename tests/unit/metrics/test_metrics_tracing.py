"""Trace context in headers, and OpenTelemetry configured from the standard ``OTEL_*`` variables.

The SDK's tracer provider is process-wide and set once, so each configuration
case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weirflow.metrics.tracing import TRACEPARENT, trace_id_of

pytest.importorskip("opentelemetry.sdk")

TRACE = "0af7651916cd43dd8448eb211c80319c"
HEADER = f"00-{TRACE}-b7ad6b7169203331-01".encode()

JOB = """
import json, sys
from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.eventlog import EventLog, Record

log_dir = sys.argv[1]
with EventLog(log_dir) as lg:
    lg.create_topic("in", 1)
    lg.create_topic("out", 1)
    lg.append("in", [Record(b"x%d" % i, headers=(("traceparent", {header!r}),)) for i in range(5)])
flow = Dataflow("sampled")
flow.source(EventLogSource(log_dir, "in"), name="in").sink(EventLogSink(log_dir, "out"), name="out")
flow.run(1, tracing=True)
with EventLog(log_dir) as lg:
    out = lg.read("out", 0, 0)
print("RESULT", json.dumps([dict(r.headers)["traceparent"].decode() for r in out]))
"""


def test_trace_id_of_reads_the_traceparent_header() -> None:
    assert trace_id_of(((TRACEPARENT, HEADER), ("x", b"y"))) == TRACE
    assert trace_id_of((("x", b"y"),)) is None
    assert trace_id_of(((TRACEPARENT, b"garbage"),)) is None


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_exporter_that_is_not_installed_is_named() -> None:
    done = _python(
        "from weirflow.metrics import configure_from_env\n"
        "from weirflow.errors import ConfigError\n"
        "try:\n    configure_from_env()\nexcept ConfigError as e:\n    print(e)\n",
        OTEL_TRACES_EXPORTER="console,nosuch",
    )
    assert done.returncode == 0, done.stderr
    assert "'nosuch', which is not installed" in done.stdout


def test_the_sampler_comes_from_the_environment(tmp_path: Path) -> None:
    """Scenario: OTEL_TRACES_SAMPLER=always_off: no span is exported, yet every record keeps
    its trace, its traceparent marked not sampled."""
    code = JOB.format(header=HEADER)
    console = {"OTEL_TRACES_EXPORTER": "console"}
    off = _python(code, str(tmp_path / "off"), OTEL_TRACES_SAMPLER="always_off", **console)
    assert off.returncode == 0, off.stderr[-2000:]
    assert '"trace_id"' not in off.stdout, "no span exported"
    parents = _result(off.stdout)
    assert len(parents) == 5
    assert all(p.split("-")[1] == TRACE and p.endswith("-00") for p in parents)

    on = _python(code, str(tmp_path / "on"), **console)
    assert on.returncode == 0, on.stderr[-2000:]
    assert '"name": "out"' in on.stdout and '"name": "in"' in on.stdout
    assert all(p.split("-")[1] == TRACE and p.endswith("-01") for p in _result(on.stdout))


def _result(stdout: str) -> list[str]:
    (line,) = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    return list(json.loads(line.removeprefix("RESULT ")))
