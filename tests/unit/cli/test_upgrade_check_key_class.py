"""A stream keyed by a Struct: a changed key class is refused, never silently restored.

A key's key group is the hash of its encoded bytes, which hold the key class's fields
and schema version; a key class that gains even a field with a default moves every key
to another key group, where the restored state is not found (the running totals would
start again from zero without a word). With the key selector's return type declared,
``upgrade-check`` and the restore plan refuse that change; without it, the restored
operator refuses the first key of the changed class.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from state_backends import STATE_BACKENDS, make_state_backend
from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig
from weirflow.cli import app
from weirflow.errors import ConfigError
from weirflow.serde import StateSchemaError
from weirflow.state import StateBackend

JOB = """
from datetime import timedelta
import msgspec
from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource
from weirflow.windows import TumblingWindows


class User(msgspec.Struct, frozen=True):
    name: str
{extra}

def user(r) -> User:
    return User(r[0])


SINK = CollectSink()
flow = Dataflow("keys")
flow.source(
    IterableSource([("u%d" % (i % 3), 1) for i in range({n})]), name="events",
    timestamp=lambda r: 0,
).key_by({selector}){operator}.sink(SINK, name="out")
"""
REDUCE = '.reduce(lambda a, b: (a[0], a[1] + b[1]), name="running")'
WINDOW = (
    '.window(TumblingWindows(size=timedelta(seconds=100))).count(name="running")'
    ".map(lambda r: (r.key.name, r.value))"
)

REGION = "    region: str = 'eu'"


def _run_twice(
    tmp_path: Path,
    selector: str,
    extra: str,
    *,
    window: bool = False,
    state: StateBackend | None = None,
) -> Path:
    """Run the job over 30 records, then write its next version (``extra`` in the key class)
    over 60; returns the job file."""
    job = tmp_path / "keys.py"
    operator = WINDOW if window else REDUCE
    job.write_text(JOB.format(extra="", n=30, selector=selector, operator=operator))
    load_dataflow(str(job)).run(
        2,
        checkpoint=CheckpointConfig(storage=str(tmp_path / "chk")),
        restore="none",
        state_backend=state,
    )
    job.write_text(JOB.format(extra=extra, n=60, selector=selector, operator=operator))
    return job


def _restore(tmp_path: Path, job: Path, state: StateBackend | None = None) -> list[Any]:
    load_dataflow(str(job)).run(
        2,
        checkpoint=CheckpointConfig(storage=str(tmp_path / "chk")),
        restore="latest",
        state_backend=state,
    )
    return sys.modules["weirflow_job_keys"].SINK.results


def test_a_declared_key_class_that_changed_is_refused(tmp_path: Path) -> None:
    """Scenario: the key selector declares ``-> User``; User gains a field with a default;
    upgrade-check names the key class and exits 1, and the restore is refused."""
    job = _run_twice(tmp_path, "user", REGION)
    latest = sorted((tmp_path / "chk" / "keys").glob("chk-*"))[-1]
    result = CliRunner().invoke(
        app, ["upgrade-check", str(job), f"--from={latest}", f"--checkpoint-dir={tmp_path / 'chk'}"]
    )
    assert result.exit_code == 1, result.output
    assert "operator 'running': key class User changed" in result.output
    with pytest.raises(ConfigError, match="key class User changed"):
        _restore(tmp_path, job)


def test_an_unchanged_key_class_restores_exactly(tmp_path: Path) -> None:
    """Scenario: the same key class in the next version: the running totals continue."""
    job = _run_twice(tmp_path, "user", "")
    last = dict(sorted(_restore(tmp_path, job)))
    assert last == {"u0": 20, "u1": 20, "u2": 20}


@pytest.mark.parametrize("backend", STATE_BACKENDS)
@pytest.mark.parametrize("operator", ["reduce", "window"])
def test_an_undeclared_key_class_that_changed_is_refused(
    tmp_path: Path, backend: str, operator: str
) -> None:
    """Scenario: the key selector is a lambda (no declared type), so only the keys show the
    class; User gains a field with a default; the restored operator (a rolling reduce, or a
    window whose state is still open) refuses the first key, naming the class, before any
    output."""
    job = _run_twice(
        tmp_path,
        "lambda r: User(r[0])",
        REGION,
        window=operator == "window",
        state=make_state_backend(backend, tmp_path),
    )
    with pytest.raises(StateSchemaError, match="operator 'running': key class User changed"):
        _restore(tmp_path, job, make_state_backend(backend, tmp_path))
    assert sys.modules["weirflow_job_keys"].SINK.results == []
