"""A job holding a chosen amount of keyed state, for recovery-time measurements.

``WF_STATE_BYTES`` of state in ``WF_KEYS`` keys (one ``bytes`` value each, random,
so that RocksDB's compression does not shrink it), built by the first records;
then a slow trickle of records keeps the job running. Every worker prints
``FIRST_RECORD <unix time>`` on stderr when it processes its first record,
which marks the end of a recovery, and ``STATE_BUILT`` when the first record of
the trickle passes (every key's record left the source before it).
"""

import itertools
import os
import sys
import time

from weirflow import Dataflow, KeyedProcessFunction
from weirflow.connectors import CollectSink, IterableSource
from weirflow.state import ValueStateDescriptor

STATE_BYTES = int(os.environ.get("WF_STATE_BYTES", str(10 << 20)))
KEYS = int(os.environ.get("WF_KEYS", "10000"))
VALUE_BYTES = max(1, STATE_BYTES // KEYS)
_first = [True]


def records():  # type: ignore[no-untyped-def]
    yield from range(KEYS)
    for i in itertools.count():
        yield KEYS + i


def mark(x: int) -> int:
    if _first[0]:
        _first[0] = False
        print(f"FIRST_RECORD {time.time():.6f}", file=sys.stderr, flush=True)
    if x == KEYS:
        print("STATE_BUILT", file=sys.stderr, flush=True)
    if x >= KEYS:
        # the trickle after the state is built: slow, so checkpoints stay small and frequent
        time.sleep(0.001)
    return x % KEYS


class Hold(KeyedProcessFunction):
    def open(self, ctx):  # type: ignore[no-untyped-def]
        self.value = ctx.get_state(ValueStateDescriptor("blob"))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        if self.value.value() is None:
            self.value.update(os.urandom(VALUE_BYTES))
        return None


flow = Dataflow("keyed_state")
(
    flow.source(IterableSource(records), name="ticks")
    .map(mark, name="mark")
    .key_by(lambda k: k)
    .process(Hold(), name="hold")
    .sink(CollectSink(), name="discard")
)
