"""Pickled operator state is written only signed, and restored only when its signature verified."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import fsspec
import pytest

from weirflow import CheckpointConfig, Dataflow
from weirflow.connectors import CollectSink, IterableSource
from weirflow.errors import CheckpointError, ConfigError, JobFailedError

KEY = b"k" * 32


class Box:
    """User-class state: only pickle stores it."""

    def __init__(self, n: int) -> None:
        self.n = n


def boxes(sink: CollectSink, n: int = 300) -> Dataflow:
    flow = Dataflow("boxes")
    (
        flow.source(IterableSource(range(n)), name="numbers")
        .map(Box, name="boxes")
        .key_by(lambda b: b.n % 3)
        .reduce(lambda a, b: Box(a.n + b.n), name="totals")
        .map(lambda b: b.n, name="value")
        .sink(sink, name="out")
    )
    return flow


def config(url: str, key: bytes | None) -> CheckpointConfig:
    return CheckpointConfig(storage=url, interval=timedelta(milliseconds=5), key=key)


def test_pickled_state_without_a_key_is_never_written(keyless_url: str) -> None:
    """Scenario: user-class state, remote storage, no key: the final checkpoint is declined."""
    with pytest.raises(JobFailedError, match="final checkpoint"):
        boxes(CollectSink()).run(1, checkpoint=config(keyless_url, None))
    assert not fsspec.filesystem("memory").glob(f"{keyless_url}/boxes/chk-*/_manifest")


def test_restore_without_the_key_refuses_pickled_state_naming_the_file(keyless_url: str) -> None:
    """Scenario: checkpoints written with a key; restoring without one refuses, with it works."""
    first = CollectSink()
    boxes(first).run(1, checkpoint=config(keyless_url, KEY))
    with pytest.raises(
        CheckpointError,
        match=r"chk-\d+/\S+totals: key group \d+ \(state\) holds "
        r"pickled state, and no checkpoint key is configured",
    ):
        boxes(CollectSink(), 0).run(1, checkpoint=config(keyless_url, None), restore="latest")
    again = CollectSink()
    boxes(again, 0).run(1, checkpoint=config(keyless_url, KEY), restore="latest")
    assert again.results == []


def test_restore_with_another_key_refuses_the_manifest(keyless_url: str) -> None:
    boxes(CollectSink()).run(1, checkpoint=config(keyless_url, KEY))
    # No checkpoint is usable under the other key: a problem of the restore option.
    with pytest.raises(ConfigError, match=r"chk-\d+/_manifest .*signature does not verify"):
        boxes(CollectSink(), 0).run(1, checkpoint=config(keyless_url, b"o" * 32), restore="latest")


class Receipt:
    """A user-class committable: a sink's checkpoint state that only pickle stores."""

    def __init__(self, written: int) -> None:
        self.written = written


class ReceiptWriter:
    def __init__(self, sink: ReceiptSink, restored: Any) -> None:
        self.sink = sink
        self.written = 0
        sink.restored.append(restored)

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self.written += len(values)

    def pre_commit(self, checkpoint_id: int) -> Receipt:
        return Receipt(self.written)

    def commit(self, checkpoint_id: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class ReceiptSink:
    def __init__(self) -> None:
        self.restored: list[Any] = []

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any
    ) -> ReceiptWriter:
        return ReceiptWriter(self, restored)


def receipts(sink: ReceiptSink, n: int) -> Dataflow:
    flow = Dataflow("receipts")
    flow.source(IterableSource(range(n)), name="numbers").sink(sink, name="out")
    return flow


def test_sink_state_that_needs_pickle_goes_to_a_signed_file(keyless_url: str) -> None:
    """Scenario: a sink's committable is a user object; the manifest stays pure data."""
    receipts(ReceiptSink(), 50).run(1, checkpoint=config(keyless_url, KEY))
    fs = fsspec.filesystem("memory")
    (manifest,) = fs.glob(f"{keyless_url}/receipts/chk-*/_manifest")[-1:]
    doc = json.loads(fs.cat_file(manifest))
    (task,) = doc["manifest"]["tasks"].values()
    assert task["metadata"]["operators"]["out"] == {
        "kind": "plain-file",
        "redistribution": "round_robin",
    }
    assert task["pickled_states"] == ["out"]
    with pytest.raises(CheckpointError, match=r"\.out: the state of operator out holds pickled"):
        receipts(ReceiptSink(), 0).run(1, checkpoint=config(keyless_url, None), restore="latest")
    again = ReceiptSink()
    receipts(again, 0).run(1, checkpoint=config(keyless_url, KEY), restore="latest")
    (restored,) = again.restored
    assert [(j, type(r).__name__, r.written) for j, r in restored.items()] == [(0, "Receipt", 50)]
