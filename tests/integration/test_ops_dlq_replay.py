"""`weirflow dlq`: dead letters go back into the input exactly once, after the fix.

The job decodes JSON events from the event log; the poison records are
single-quoted (Python-literal) JSON, which the broken decoder rejects and the
fixed one reads. Output: one record per event, exactly once.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1]))
from dlq_checks import assert_letters_keep_their_originals, assert_replayed_as_letters
from run_until import run_until
from weirflow import Dataflow
from weirflow.cli import app
from weirflow.connectors import DeadLetterEventLogSink, EventLogSink, EventLogSource
from weirflow.connectors.dead_letters import REPLAY_OF, StoredDeadLetter
from weirflow.eventlog import EventLog, Record

N = 300
POISON = {17, 90, 91, 150, 299}
JSON_ERROR = "json.decoder.JSONDecodeError"


def make_input(log_dir: Path) -> None:
    """``N`` keyed events with a trace header in ``events``; every id in POISON is malformed."""
    records = []
    for i in range(N):
        event = {"id": i, "user": f"u{i % 7}", "amount": i % 10}
        value = str(event).encode() if i in POISON else json.dumps(event).encode()
        headers = (("trace", f"t{i}".encode()),)
        records.append(
            Record(value, key=f"u{i % 7}".encode(), timestamp_ms=1000 + i, headers=headers)
        )
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("results", 2)
        lg.create_topic("dead", 1)
        lg.append("events", records)


def lenient(raw: bytes) -> Any:
    """The fix: JSON, or a Python literal."""
    try:
        return json.loads(raw)
    except ValueError:
        return ast.literal_eval(raw.decode())


def run(
    log_dir: Path, chk: Path, decode: Any, restore: str | None, results: int, letters: int
) -> None:
    """Run the job until ``results`` results and ``letters`` dead letters are committed, then
    stop it (final checkpoint); the source is unbounded, so that a restored run reads what
    was appended since."""
    flow = Dataflow("dlq_job")
    events = flow.source(
        EventLogSource(log_dir, "events", decode=decode, bounded=False),
        name="events",
        on_error="dead_letter",
    )
    events.map(lambda e: [e["id"], e["user"], e["amount"]], name="shape").sink(
        EventLogSink(log_dir, "results"), name="results"
    )
    events.dead_letters().sink(DeadLetterEventLogSink(log_dir, "dead"), name="dead")
    run_until(
        flow,
        chk,
        restore,
        lambda: (
            len(topic(log_dir, "results")) >= results and len(topic(log_dir, "dead")) >= letters
        ),
    )


def topic(log_dir: Path, name: str) -> list[Any]:
    with EventLog(log_dir) as lg:
        out = []
        for p in range(lg.partition_count(name)):
            pos = 0
            while batch := lg.read(name, p, pos):
                out += batch
                pos = batch[-1].offset + 1
        return out


def results(log_dir: Path) -> Counter[str]:
    return Counter(r.value.decode() for r in topic(log_dir, "results"))


def dlq(log_dir: Path, *args: str) -> Any:
    done = CliRunner().invoke(app, ["dlq", "--log-dir", str(log_dir), *args])
    assert done.exit_code == 0, done.output
    return done


def test_replay_after_the_fix_gives_the_clean_output_and_twice_replays_nothing(
    tmp_path: Path,
) -> None:
    """Scenario: poison records dead-lettered; replayed into a still-broken job (they fail
    again, attempts raised); replayed again after the fix; each replay also run twice."""
    clean_dir = tmp_path / "clean"
    make_input(clean_dir)
    run(clean_dir, tmp_path / "clean-chk", lenient, None, N, 0)
    clean = results(clean_dir)
    assert sum(clean.values()) == N

    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    make_input(log_dir)
    run(log_dir, chk, json.loads, None, N - len(POISON), len(POISON))
    letters = [StoredDeadLetter.from_record(r) for r in topic(log_dir, "dead")]
    assert len(letters) == len(POISON)
    assert_letters_keep_their_originals(letters, topic(log_dir, "events"), JSON_ERROR, "events")
    listed = dlq(log_dir, "list", "dead").output
    assert JSON_ERROR in listed and f"{len(POISON)}" in listed

    assert (
        "would replay 0"
        in dlq(
            log_dir,
            "replay",
            "dead",
            "--into",
            "events",
            "--where",
            "error_type=KeyError",
            "--dry-run",
        ).output
    )
    before = len(topic(log_dir, "events"))
    assert (
        f"would replay {len(POISON)}"
        in dlq(log_dir, "replay", "dead", "--into", "events", "--dry-run").output
    )
    assert len(topic(log_dir, "events")) == before

    # not fixed yet: the replayed records fail again and come back with 2 attempts
    assert f"replayed {len(POISON)}" in dlq(log_dir, "replay", "dead", "--into", "events").output
    assert "replayed 0" in dlq(log_dir, "replay", "dead", "--into", "events").output
    assert len(topic(log_dir, "events")) == before + len(POISON)
    replayed = [r for r in topic(log_dir, "events") if REPLAY_OF in dict(r.headers)]
    assert len(replayed) == len(POISON)
    assert_replayed_as_letters(replayed, letters, attempts=1)
    run(log_dir, chk, json.loads, "latest", N - len(POISON), 2 * len(POISON))
    again = [StoredDeadLetter.from_record(r) for r in topic(log_dir, "dead")][len(POISON) :]
    assert sorted(d.attempts for d in again) == [2] * len(POISON)
    assert sorted(d.headers for d in again) == sorted(d.headers for d in letters)

    # the fix is deployed: only the second generation of letters goes back, once
    assert (
        f"replayed {len(POISON)}"
        in dlq(
            log_dir, "replay", "dead", "--into", "events", "--where", f"error_type={JSON_ERROR}"
        ).output
    )
    run(log_dir, chk, lenient, "latest", N, 2 * len(POISON))
    before = len(topic(log_dir, "events"))
    assert "replayed 0" in dlq(log_dir, "replay", "dead", "--into", "events").output
    assert len(topic(log_dir, "events")) == before
    assert results(log_dir) == clean
    assert len(topic(log_dir, "dead")) == 2 * len(POISON)
