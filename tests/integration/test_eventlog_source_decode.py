"""Records that an EventLogSource's ``decode=`` cannot decode follow the source's ``on_error``
(regression: non-JSON bytes crashed the job with no topic, partition or offset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weirflow import Dataflow, DeadLetter, LogPosition, OperatorError
from weirflow.connectors import CollectSink, EventLogSource
from weirflow.eventlog import EventLog, Record

TOPIC = "events"
PARTITIONS = 3
N = 600
#: Values of the records with these ids are not JSON (``None`` is an empty record).
POISON: dict[int, bytes | None] = {
    5: b"\xff\xfe not utf-8",
    77: b"{'single': 'quotes'}",
    78: b"",
    301: None,
    599: b"[1, 2",
}


def fill_log(log_dir: Path) -> dict[LogPosition, tuple[bytes | None, int]]:
    """Append ``N`` records, ``POISON`` among them; return position → (raw value, timestamp)
    of every poisoned record."""
    records = []
    for i in range(N):
        value = POISON[i] if i in POISON else json.dumps({"id": i, "n": i % 7}).encode()
        records.append(Record(value, timestamp_ms=10_000 + i, partition=i % PARTITIONS))
    with EventLog(log_dir) as lg:
        lg.create_topic(TOPIC, PARTITIONS)
        placed = lg.append(TOPIC, records)
    return {
        LogPosition(TOPIC, p, o): (records[i].value, records[i].timestamp_ms)
        for i, (p, o) in enumerate(placed)
        if i in POISON
    }


def build(log_dir: Path, on_error: str) -> tuple[Dataflow, CollectSink, CollectSink]:
    flow = Dataflow("decode_errors")
    events = flow.source(
        EventLogSource(log_dir, TOPIC, decode=json.loads), name="events", on_error=on_error
    )
    odd = events.filter(lambda e: e["id"] % 2 == 1, name="odd")
    out, dead = CollectSink(), CollectSink()
    odd.sink(out)
    events.dead_letters().sink(dead, name="letters")
    return flow, out, dead


@pytest.mark.parametrize("parallelism", [1, 2])
def test_undecodable_records_are_dead_lettered_with_position_and_raw_bytes(
    tmp_path: Path, parallelism: int
) -> None:
    """Scenario: five of 600 event-log records are not JSON; the policy is dead_letter."""
    poisoned = fill_log(tmp_path)
    flow, out, dead = build(tmp_path, "dead_letter")
    result = flow.run(parallelism)

    letters: list[DeadLetter] = dead.results
    assert sorted(d.position for d in letters) == sorted(poisoned)
    for d in letters:
        assert isinstance(d.position, LogPosition)
        assert (d.value, d.timestamp_ms) == poisoned[d.position]
        assert d.operator == "events"
        assert d.attempts == 1
        assert d.error_type in ("json.decoder.JSONDecodeError", "builtins.TypeError")
        assert d.traceback
    good = [i for i in range(N) if i not in POISON]
    assert sorted(e["id"] for e in out.results) == [i for i in good if i % 2 == 1]
    src, odd = result.operators["events"], result.operators["odd"]
    assert src.records_in == N
    assert src.dead_lettered == len(POISON)
    assert src.records_in == src.records_out + src.filtered + src.dead_lettered
    assert odd.records_in == src.records_out == len(good)
    assert odd.records_in == odd.records_out + odd.filtered + odd.dead_lettered
    assert result.operators["letters"].records_in == len(POISON)


def test_fail_policy_names_topic_partition_and_offset(tmp_path: Path) -> None:
    """Scenario: the same log under the default policy; the job fails at the first bad record."""
    poisoned = fill_log(tmp_path)
    flow, _, _ = build(tmp_path, "fail")
    with pytest.raises(OperatorError) as info:
        flow.run(1)
    err = info.value
    assert err.position in poisoned
    pos = err.position
    assert isinstance(pos, LogPosition)
    assert err.record == poisoned[pos][0]
    assert err.operator == "events"
    message = str(err)
    assert f"topic '{TOPIC}' partition {pos.partition} offset {pos.offset}" in message
    assert "decode=" in message
    assert "on_error='dead_letter'" in message
    assert err.__cause__ is not None
