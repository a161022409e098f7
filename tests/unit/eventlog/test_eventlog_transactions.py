"""Transactions: atomic visibility, abort, prepare/commit by handle, fencing, state errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from weirflow.eventlog import (
    EventLog,
    InvalidArgumentError,
    ProducerFencedError,
    Record,
    TransactionHandle,
    TransactionStateError,
    UnknownTransactionError,
)
from weirflow.serde import decode, encode, is_plain


def _values(log: EventLog, topic: str = "t", partition: int = 0, iso: str = "read_committed"):
    return [r.value for r in log.read(topic, partition, 0, isolation=iso)]  # type: ignore[arg-type]


@pytest.fixture
def topic(log: EventLog) -> str:
    log.create_topic("t", 1)
    return "t"


def test_records_are_visible_only_after_commit(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"a"), Record(b"b")])
    producer.append(topic, [Record(b"c")])
    assert _values(log) == []
    assert log.end_offset(topic, 0) == 0
    producer.commit()
    assert _values(log) == [b"a", b"b", b"c"]
    assert log.end_offset(topic, 0) == 3


def test_aborted_records_never_appear_and_leave_no_offset_gap(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"lost")])
    producer.abort()
    log.append(topic, [Record(b"plain")])
    assert [(r.offset, r.value) for r in log.read(topic, 0, 0)] == [(0, b"plain")]
    assert log.end_offset(topic, 0, "read_uncommitted") == 1


def test_commit_interleaves_with_plain_appends_densely(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"t1"), Record(b"t2")])
    log.append(topic, [Record(b"p1")])
    producer.commit()
    log.append(topic, [Record(b"p2")])
    got = log.read(topic, 0, 0)
    assert [(r.offset, r.value) for r in got] == [(0, b"p1"), (1, b"t1"), (2, b"t2"), (3, b"p2")]


def test_read_uncommitted_shows_staged_records_after_the_committed_end(
    log: EventLog, topic: str
) -> None:
    log.append(topic, [Record(b"c0")])
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"s0"), Record(b"s1")])
    assert _values(log, iso="read_uncommitted") == [b"c0", b"s0", b"s1"]
    assert log.end_offset(topic, 0, "read_uncommitted") == 3
    tail = log.read(topic, 0, 2, isolation="read_uncommitted")
    assert [(r.offset, r.value) for r in tail] == [(2, b"s1")]
    assert log.read(topic, 0, 1, max_records=1, isolation="read_uncommitted")[0].value == b"s0"
    assert _values(log) == [b"c0"]


def test_prepare_then_commit_from_another_instance_once(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"x"), Record(b"y")])
    handle = producer.prepare()
    assert handle == TransactionHandle("sink-0", producer.epoch, handle.sequence)
    assert _values(log) == []
    assert log.list_prepared("sink-0") == [handle]
    with EventLog(log.path, "process") as other:
        restored = TransactionHandle.from_dict(decode(encode(handle.to_dict())))
        other.commit_prepared(restored)
        other.commit_prepared(restored)
    log.commit_prepared(handle)
    assert _values(log) == [b"x", b"y"]
    assert log.list_prepared("sink-0") == []


def test_several_prepared_transactions_wait_side_by_side(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    handles = []
    for tag in (b"n1", b"n2", b"n3"):
        producer.begin()
        producer.append(topic, [Record(tag)])
        handles.append(producer.prepare())
    assert log.list_prepared("sink-0") == handles
    log.commit_prepared(handles[1])
    log.abort_prepared(handles[2])
    log.commit_prepared(handles[0])
    assert _values(log) == [b"n2", b"n1"]


def test_abort_prepared_is_idempotent_and_commit_after_abort_raises(
    log: EventLog, topic: str
) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    producer.append(topic, [Record(b"x")])
    handle = producer.prepare()
    log.abort_prepared(handle)
    log.abort_prepared(handle)
    with pytest.raises(TransactionStateError, match="aborted"):
        log.commit_prepared(handle)
    assert _values(log) == []


def test_abort_after_commit_raises(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    handle = producer.prepare()
    log.commit_prepared(handle)
    with pytest.raises(TransactionStateError, match="committed"):
        log.abort_prepared(handle)


def test_unknown_handles_are_refused(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    handle = producer.prepare()
    for bad in (
        TransactionHandle("nobody", 0, 0),
        TransactionHandle("sink-0", handle.epoch + 1, handle.sequence),
        TransactionHandle("sink-0", handle.epoch, handle.sequence + 5),
    ):
        with pytest.raises(UnknownTransactionError, match="no such transaction"):
            log.commit_prepared(bad)


def test_registering_again_fences_the_old_instance_and_aborts_its_open_txn(
    log: EventLog, topic: str
) -> None:
    zombie = log.transactional_producer("sink-0")
    zombie.begin()
    zombie.append(topic, [Record(b"zombie")])
    fresh = log.transactional_producer("sink-0")
    assert fresh.epoch == zombie.epoch + 1
    assert log.end_offset(topic, 0, "read_uncommitted") == 0
    with pytest.raises(ProducerFencedError, match="fenced"):
        zombie.append(topic, [Record(b"late")])
    with pytest.raises(ProducerFencedError):
        zombie.commit()
    with pytest.raises(ProducerFencedError):
        zombie.begin()
    fresh.begin()
    fresh.append(topic, [Record(b"fresh")])
    fresh.commit()
    assert _values(log) == [b"fresh"]


def test_fencing_from_another_process_handle_applies_at_next_call(
    log: EventLog, topic: str
) -> None:
    zombie = log.transactional_producer("sink-0")
    zombie.begin()
    zombie.append(topic, [Record(b"zombie")])
    with EventLog(log.path, "process") as other:
        other.transactional_producer("sink-0")
    with pytest.raises(ProducerFencedError):
        zombie.prepare()
    assert _values(log, iso="read_uncommitted") == []


def test_prepared_transactions_survive_fencing(log: EventLog, topic: str) -> None:
    old = log.transactional_producer("sink-0")
    old.begin()
    old.append(topic, [Record(b"pre-committed")])
    handle = old.prepare()
    log.transactional_producer("sink-0")
    assert log.list_prepared("sink-0") == [handle]
    log.commit_prepared(handle)
    assert _values(log) == [b"pre-committed"]


def test_transaction_calls_out_of_order_raise_state_errors(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    with pytest.raises(TransactionStateError, match=r"begin\(\) first"):
        producer.append(topic, [Record(b"x")])
    for call in (producer.commit, producer.abort, producer.prepare):
        with pytest.raises(TransactionStateError):
            call()
    producer.begin()
    with pytest.raises(TransactionStateError, match="open transaction"):
        producer.begin()


def test_bad_records_in_a_transaction_stage_nothing(log: EventLog, topic: str) -> None:
    producer = log.transactional_producer("sink-0")
    producer.begin()
    with pytest.raises(InvalidArgumentError):
        producer.append(topic, [Record(b"ok"), Record("text")])  # type: ignore[arg-type]
    producer.commit()
    assert _values(log) == []


def test_sequences_increase_across_epochs(log: EventLog, topic: str) -> None:
    a = log.transactional_producer("sink-0")
    a.begin()
    first = a.prepare()
    b = log.transactional_producer("sink-0")
    b.begin()
    second = b.prepare()
    assert (first.epoch, second.epoch) == (0, 1)
    assert second.sequence > first.sequence


@pytest.mark.parametrize("tid", ["", None, 5])
def test_bad_transactional_ids_are_refused(log: EventLog, tid: object) -> None:
    with pytest.raises(InvalidArgumentError, match="transactional_id"):
        log.transactional_producer(tid)  # type: ignore[arg-type]


def test_handle_from_dict_refuses_bad_input() -> None:
    assert TransactionHandle.from_dict({"transactional_id": "a", "epoch": 1, "sequence": 2}) == (
        TransactionHandle("a", 1, 2)
    )
    with pytest.raises(InvalidArgumentError, match="not a transaction handle"):
        TransactionHandle.from_dict({"transactional_id": "a", "epoch": 1})
    with pytest.raises(InvalidArgumentError, match="not a transaction handle"):
        TransactionHandle.from_dict({"transactional_id": "a", "epoch": "1", "sequence": 2})


def test_handle_round_trips_through_serde() -> None:
    handle = TransactionHandle("sink-3", 7, 42)
    assert decode(encode(handle), allow_pickle=True) == handle
    # Committables go into checkpoints as dicts: built-in data, no pickle.
    assert is_plain(handle.to_dict())


def _prepare(log: EventLog, tid: str, checkpoint_id: int, n: int) -> TransactionHandle:
    producer = log.transactional_producer(tid)
    producer.begin()
    producer.append("t", [Record(b"x")] * n)
    return producer.prepare(checkpoint_id)


def test_commits_after_counts_committed_transactions_of_newer_checkpoints(
    log: EventLog, topic: str
) -> None:
    """Scenario: checkpoints 1..3 prepared, 1 and 2 committed; a restore of 1 would repeat
    checkpoint 2's records, a restore of 2 nothing; prepared-only and other ids never count."""
    handles = [_prepare(log, "sink.0", cid, n) for cid, n in ((1, 2), (2, 3), (3, 5))]
    _prepare(log, "sink.1", 2, 7)
    log.commit_prepared(handles[0])
    log.commit_prepared(handles[1])
    found = log.commits_after("sink.0", 1)
    assert found is not None
    assert (found.newest_checkpoint_id, found.transactions, found.records) == (2, 1, 3)
    assert log.commits_after("sink.0", 2) is None
    assert log.commits_after("sink.1", 1) is None


def test_commits_after_ignores_an_earlier_run_of_a_reused_id(log: EventLog, topic: str) -> None:
    """Scenario: a job started afresh in an empty checkpoint folder numbers checkpoints from
    1 again under the same transactional id; the earlier run's checkpoint 9 does not count."""
    log.commit_prepared(_prepare(log, "sink.0", 9, 4))
    log.commit_prepared(_prepare(log, "sink.0", 1, 2))
    assert log.commits_after("sink.0", 1) is None
    log.commit_prepared(_prepare(log, "sink.0", 2, 6))
    found = log.commits_after("sink.0", 1)
    assert found is not None and (found.newest_checkpoint_id, found.records) == (2, 6)


def test_a_log_made_before_transaction_marks_gets_them_on_open(tmp_path: Path) -> None:
    """Scenario: an event log written by a build without the marks table opens, and its
    sinks can mark transactions from then on."""
    with EventLog(tmp_path / "old", "process") as lg:
        lg.create_topic("t", 1)
    db = sqlite3.connect(tmp_path / "old" / "eventlog.sqlite3")
    db.execute("DROP TABLE transaction_marks")
    db.commit()
    db.close()
    with EventLog(tmp_path / "old", "process") as lg:
        lg.commit_prepared(_prepare(lg, "sink.0", 3, 1))
        assert lg.commits_after("sink.0", 2) is not None
