"""Map state keyed by a Struct: a changed key class never silently merges restored entries.

A map's user keys are rebuilt by field name like its values; a field removed from a
hashable (frozen) key class would make two stored keys one, and one of their values
would be lost without a word. The restore refuses that change, naming the class and
the field, on both state backends, whether or not the descriptor declares ``key_type``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from state_backends import STATE_BACKENDS, make_state_backend
from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig
from weirflow.serde import StateSchemaError

JOB = """
import msgspec
from weirflow import Dataflow, KeyedProcessFunction
from weirflow.connectors import CollectSink, IterableSource
from weirflow.state import MapStateDescriptor


{sku}


class PerShelf(KeyedProcessFunction):
    def open(self, ctx):
        self.counts = ctx.get_state(MapStateDescriptor("counts"))

    def process_element(self, value, ctx):
        user, i = value
        sku = {make}
        self.counts.put(sku, (self.counts.get(sku) or 0) + 1)
        yield (user, i, sorted(self.counts.values()))


SINK = CollectSink()
flow = Dataflow("shelves")
flow.source(
    IterableSource([("u%d" % (i % 2), i) for i in range({stop})]), name="events"
).key_by(lambda r: r[0]).process(PerShelf(), name="per_shelf").sink(SINK, name="out")
"""

SKU_V1 = """
class Sku(msgspec.Struct, frozen=True):
    code: str
    shelf: int
"""
MAKE_V1 = 'Sku("s%d" % (i % 2), i % 3)'

SKU_DROPPED = """
class Sku(msgspec.Struct, frozen=True):
    code: str
"""
SKU_ADDED = """
class Sku(msgspec.Struct, frozen=True):
    code: str
    shelf: int
    aisle: int = 0
"""


def _job(path: Path, sku: str, make: str, stop: int):  # type: ignore[no-untyped-def]
    path.write_text(JOB.format(sku=sku, make=make, stop=stop))
    return load_dataflow(str(path))


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_a_field_removed_from_a_map_key_class_is_refused(tmp_path: Path, backend: str) -> None:
    """Scenario: a map keyed by Sku(code, shelf) holds three shelves per code; the next job
    version drops ``shelf`` from Sku, which would fold the three entries into one; the
    restore is refused, naming Sku and the field."""
    config = CheckpointConfig(storage=str(tmp_path / "chk"))
    job = tmp_path / "shelves.py"
    state = make_state_backend(backend, tmp_path)
    _job(job, SKU_V1, MAKE_V1, 60).run(2, checkpoint=config, restore="none", state_backend=state)
    flow = _job(job, SKU_DROPPED, 'Sku("s%d" % (i % 2))', 80)
    with pytest.raises(Exception) as refused:
        flow.run(
            2,
            checkpoint=config,
            restore="latest",
            state_backend=make_state_backend(backend, tmp_path),
        )
    # the memory backend rebuilds values as it restores, RocksDB when a value is first read
    # (then the operator's error names the record, and the schema error is its cause)
    cause: BaseException | None = refused.value
    while cause is not None and not isinstance(cause, StateSchemaError):
        cause = cause.__cause__
    assert cause is not None, refused.value
    assert "Sku: field 'shelf' removed from a hashable class" in str(cause)
    assert sys.modules["weirflow_job_shelves"].SINK.results == []


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_a_field_added_to_a_map_key_class_keeps_every_entry(tmp_path: Path, backend: str) -> None:
    """Scenario: the key class gains a field with a default; every restored key takes it, the
    new records build the same keys, and the counts continue: each of the six (code, shelf)
    entries counts every record of its own, before and after the restore."""
    config = CheckpointConfig(storage=str(tmp_path / "chk"))
    job = tmp_path / "shelves.py"
    state = make_state_backend(backend, tmp_path)
    _job(job, SKU_V1, MAKE_V1, 60).run(2, checkpoint=config, restore="none", state_backend=state)
    flow = _job(job, SKU_ADDED, MAKE_V1, 120)
    flow.run(
        2, checkpoint=config, restore="latest", state_backend=make_state_backend(backend, tmp_path)
    )
    last = {r[0]: r[2] for r in sorted(sys.modules["weirflow_job_shelves"].SINK.results)}
    # 120 records, each user's 60 spread over its code's three shelves: 20 on each
    assert last == {"u0": [20, 20, 20], "u1": [20, 20, 20]}
