"""In-flight data of unaligned checkpoints: its file, its trust path, and replay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pytest

from weirflow.checkpoint import CheckpointStorage, Manifest
from weirflow.errors import CheckpointError, ConfigError
from weirflow.runtime import state_file_uses_pickle
from weirflow.runtime.events import Batch, Watermark
from weirflow.runtime.inflight import (
    ChannelState,
    InFlightCapture,
    decode_item,
    encode_item,
    submit_when_captured,
)
from weirflow.runtime.inflight_restore import plan_in_flight
from weirflow.runtime.snapshots import EncodedSnapshot, write_task_snapshot
from weirflow.serde import decode

KEY = b"k" * 32


@dataclass
class Order:
    """A user record: only pickle stores it."""

    id: int


@pytest.fixture
def url() -> Iterator[str]:
    name = f"memory://inflight-{uuid.uuid4().hex}"
    yield name
    fs = fsspec.filesystem("memory")
    if fs.exists(name):
        fs.rm(name, recursive=True)


def _captured(values: list[object]) -> InFlightCapture:
    capture = InFlightCapture(7, [[[Batch(values, [1, 2])], []]], {0, 1})
    capture.record(0, Watermark(5))
    capture.barrier_arrived(0, [Batch(values[:1], None, ["k"])])
    states: list[ChannelState] = []
    capture.on_complete(states.append)
    assert not states, "input 1 has not delivered the barrier"
    capture.channel_ended(1)
    assert capture.complete and states == [capture.state]
    return capture


def _manifest(storage: CheckpointStorage, capture: InFlightCapture, parallelism: int) -> Manifest:
    written: list[EncodedSnapshot] = []
    snap = EncodedSnapshot("relay[0/2]", {}, {"subtask": 0}, frozenset())
    submit_when_captured(capture, snap, written.append)
    acknowledged = write_task_snapshot(storage, 7, written[0])
    return Manifest("job", 7, 0, 1, "exactly_once", parallelism, 128, {"relay[0/2]": acknowledged})


def test_capture_round_trips_through_its_file() -> None:
    state = _captured([Order(1), Order(2)]).state
    back = ChannelState.from_bytes(state.to_bytes(), "f").decoded(
        lambda b: decode(b, allow_pickle=True)
    )
    (out,) = back.output
    assert [b.values for b in out[0]] == [[Order(1), Order(2)]] and out[1] == []
    first, second = back.inputs[0]
    assert first == Watermark(5) and second.values == [Order(1)] and second.keys == ["k"]
    assert back.inputs[1] == []
    assert state.uses_pickle and not _captured([1, 2]).state.uses_pickle


def test_pickled_in_flight_records_need_a_key_to_be_written(url: str) -> None:
    with pytest.raises(CheckpointError, match=r"_in_flight .* need pickle"):
        _manifest(CheckpointStorage(url, "job"), _captured([Order(1)]), 2)


def test_in_flight_records_restore_only_from_a_verified_file(url: str) -> None:
    manifest = _manifest(CheckpointStorage(url, "job", key=KEY), _captured([Order(3)]), 2)
    (handle,) = manifest.tasks["relay[0/2]"].handles.values()
    assert state_file_uses_pickle(CheckpointStorage(url, "job").read_state(handle))
    data = plan_in_flight(manifest, CheckpointStorage(url, "job", key=KEY), 2, ["relay[0/2]"])
    assert data["relay[0/2]"].output[0][0][0].values == [Order(3)]
    assert plan_in_flight(manifest, CheckpointStorage(url, "job", key=KEY), 2, ["other[0/2]"]) == {}
    with pytest.raises(CheckpointError, match="in-flight data holds pickled state"):
        plan_in_flight(manifest, CheckpointStorage(url, "job"), 2, ["relay[0/2]"])


def test_in_flight_records_refuse_another_parallelism(url: str) -> None:
    manifest = _manifest(CheckpointStorage(url, "job", key=KEY), _captured([1]), 2)
    with pytest.raises(ConfigError, match="at parallelism 2, take an aligned checkpoint"):
        plan_in_flight(manifest, CheckpointStorage(url, "job", key=KEY), 3, ["relay[0/3]"])


def test_empty_capture_adds_no_file(url: str) -> None:
    storage = CheckpointStorage(url, "job", key=KEY)
    manifest = _manifest(storage, InFlightCapture(7, [[[]]], set()), 2)
    assert manifest.tasks["relay[0/2]"].handles == {}
    assert plan_in_flight(manifest, storage, 3, ["relay[0/3]"]) == {}


def test_in_flight_buffers_keep_their_headers() -> None:
    headers = [(("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),), ()]
    for batch in (Batch([1, 2], [5, 6], None, headers), Batch([1, 2], [5, 6])):
        back = decode_item(decode(encode_item(batch)))
        assert isinstance(back, Batch)
        assert back.values == [1, 2] and back.timestamps == [5, 6]
        assert back.headers == batch.headers


def test_rescaled_in_flight_records_keep_their_timestamps_and_headers() -> None:
    from weirflow.runtime.inflight_restore import _by_key_group
    from weirflow.state import key_group_for_key, subtask_for_key_group

    keys = [f"k{i}" for i in range(40)]
    headers = [(("traceparent", f"{i:02d}".encode()),) for i in range(40)]
    batch = Batch(list(range(40)), [1000 + i for i in range(40)], keys, headers)
    parts = _by_key_group(batch, 3, 128)
    seen = []
    for subtask, part in parts.items():
        assert part.keys is not None and part.timestamps is not None and part.headers is not None
        for value, ts, key, header in zip(
            part.values, part.timestamps, part.keys, part.headers, strict=True
        ):
            assert subtask_for_key_group(128, 3, key_group_for_key(key, 128)) == subtask
            assert (ts, key, header) == (1000 + value, keys[value], headers[value])
            seen.append(value)
    assert sorted(seen) == list(range(40))
    untraced = _by_key_group(Batch([1, 2], None, ["a", "b"]), 3, 128)
    assert all(p.headers is None and p.timestamps is None for p in untraced.values())
