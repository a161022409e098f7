"""Pickled operator state is written only signed, and restored only when its signature verified."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import fsspec
import pytest

from weirflow import CheckpointConfig, Dataflow
from weirflow.checkpoint import KEY_ENV, KEY_FILE_ENV
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


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Remote-like storage (no default key file) with no key in the environment."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    name = f"memory://trust-{uuid.uuid4().hex}"
    yield name
    fs = fsspec.filesystem("memory")
    if fs.exists(name):
        fs.rm(name, recursive=True)


def config(url: str, key: bytes | None) -> CheckpointConfig:
    return CheckpointConfig(storage=url, interval=timedelta(milliseconds=5), key=key)


def test_pickled_state_without_a_key_is_never_written(url: str) -> None:
    """Scenario: user-class state, remote storage, no key: the final checkpoint is declined."""
    with pytest.raises(JobFailedError, match="final checkpoint"):
        boxes(CollectSink()).run(1, checkpoint=config(url, None))
    assert not fsspec.filesystem("memory").glob(f"{url}/boxes/chk-*/_manifest")


def test_restore_without_the_key_refuses_pickled_state_naming_the_file(url: str) -> None:
    """Scenario: checkpoints written with a key; restoring without one refuses, with it works."""
    first = CollectSink()
    boxes(first).run(1, checkpoint=config(url, KEY))
    with pytest.raises(
        CheckpointError,
        match=r"chk-\d+/\S+totals: key group \d+ \(state\) holds "
        r"pickled state, and no checkpoint key is configured",
    ):
        boxes(CollectSink(), 0).run(1, checkpoint=config(url, None), restore="latest")
    again = CollectSink()
    boxes(again, 0).run(1, checkpoint=config(url, KEY), restore="latest")
    assert again.results == []


def test_restore_with_another_key_refuses_the_manifest(url: str) -> None:
    boxes(CollectSink()).run(1, checkpoint=config(url, KEY))
    # No checkpoint is usable under the other key: a problem of the restore option.
    with pytest.raises(ConfigError, match=r"chk-\d+/_manifest .*signature does not verify"):
        boxes(CollectSink(), 0).run(1, checkpoint=config(url, b"o" * 32), restore="latest")
