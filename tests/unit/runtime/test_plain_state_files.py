"""Large built-in operator state goes to a state file of its own; small state stays inline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fsspec
import pytest

from weirflow import CheckpointConfig, Dataflow
from weirflow.checkpoint import Manifest
from weirflow.connectors import IterableSource
from weirflow.runtime.snapshots import INLINE_STATE_LIMIT


class StagingSink:
    """A sink whose committable is every value of the run, as one bytes blob (like the rows a
    transactional sink stages), padded to ``pad`` bytes; the restored state is recorded."""

    def __init__(self, pad: int) -> None:
        self.pad = pad
        self.restored: Any = None

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any
    ) -> StagingSink:
        self.restored = restored
        self.values: list[int] = []
        return self

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self.values.extend(values)

    def pre_commit(self, checkpoint_id: int) -> dict[str, Any]:
        blob = bytes(v % 256 for v in self.values)
        return {"n": len(self.values), "blob": blob.ljust(self.pad, b"\0")}

    def commit(self, checkpoint_id: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(url: str, sink: StagingSink, restore: str | None = None) -> None:
    flow = Dataflow("staging")
    flow.source(IterableSource(range(1000)), name="numbers").sink(sink, name="out")
    config = CheckpointConfig(storage=url, interval=timedelta(seconds=60), key=None)
    flow.run(1, checkpoint=config, restore=restore)


def sink_entry(url: str) -> tuple[dict[str, Any], int]:
    """The sink's operator entry in the newest manifest, and the manifest's size (bytes)."""
    fs = fsspec.filesystem("memory")
    newest = sorted(fs.glob(f"{url}/staging/chk-*/_manifest"))[-1]
    raw = fs.cat(newest)
    manifest = Manifest.from_bytes(raw, newest, None)
    (entry,) = [
        t.metadata["operators"]["out"]
        for t in manifest.tasks.values()
        if "out" in t.metadata["operators"]
    ]
    return entry, len(raw)


@pytest.mark.parametrize("pad", [100, 4 * INLINE_STATE_LIMIT])
def test_plain_state_round_trips_inline_or_in_a_file_by_its_size(
    keyless_url: str, pad: int
) -> None:
    """Scenario: a sink stages 100 B or 64 KiB of bytes at the final checkpoint, on storage
    without a key; restored, its writer gets exactly that state back.

    The large state is no pickle (it is written without a key) and leaves the manifest
    small; the small one stays inline.
    """
    first = StagingSink(pad)
    run(keyless_url, first)
    entry, manifest_bytes = sink_entry(keyless_url)
    expected = first.pre_commit(0)
    if pad > INLINE_STATE_LIMIT:
        assert entry["kind"] == "plain-file" and "state" not in entry
        assert manifest_bytes < INLINE_STATE_LIMIT
    else:
        assert entry["kind"] == "plain"
    again = StagingSink(pad)
    run(keyless_url, again, restore="latest")
    assert again.restored == {0: expected}
    assert expected["n"] == 1000
