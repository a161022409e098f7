"""A recovery-test job: a KeyedProcessFunction with state and event-time timers.

Per user, events whose times are no more than :data:`GAP_MS` apart (in time
order) form a burst; the function emits ``[user, count, sum, first_ts,
last_ts]`` per burst from list state and event-time timers. Input: topic
``events`` of ``WF_LOG_DIR`` (see ``chaos_helpers.make_input``); output: topic
``bursts``, exactly once.
"""

import os
from collections.abc import Iterator
from typing import Any

from windowed_sum_core import user_amounts

from weirflow import Dataflow, KeyedProcessFunction
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.state import ListStateDescriptor

LOG_DIR = os.environ["WF_LOG_DIR"]
GAP_MS = 100


class Bursts(KeyedProcessFunction[Any, Any]):
    """Emits one record per burst of a key's events (gaps of at most :data:`GAP_MS`).

    Events wait in list state; each registers a timer at ``ts + GAP_MS``. When
    a timer fires, every event up to its time has arrived (no event is late),
    so each buffered burst whose last event lies ``GAP_MS`` or more before
    the timer is complete and is emitted, whatever order the events came in.
    """

    def open(self, ctx: Any) -> None:
        """Declare the buffer of ``(ts, amount)`` not yet in an emitted burst."""
        self.pending = ctx.get_state(ListStateDescriptor("pending"))

    def process_element(self, value: tuple[str, int], ctx: Any) -> None:
        """Buffer one ``(user, amount)`` and set the timer that may close its burst."""
        self.pending.add((ctx.timestamp, value[1]))
        ctx.register_event_time_timer(ctx.timestamp + GAP_MS)

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterator[list[Any]]:
        """Emit ``[user, count, sum, first_ts, last_ts]`` of each burst closed by now."""
        events = sorted(tuple(e) for e in self.pending.get())
        burst: list[tuple[int, int]] = []
        for i, (ts, amount) in enumerate(events):
            burst.append((ts, amount))
            following = events[i + 1][0] if i + 1 < len(events) else None
            if following is not None and following - ts <= GAP_MS:
                continue
            if ts + GAP_MS > timestamp_ms:
                # the burst may still grow: keep it and everything after it
                self.pending.update(events[i + 1 - len(burst) :])
                return
            yield [ctx.current_key, len(burst), sum(a for _, a in burst), burst[0][0], ts]
            burst = []
        self.pending.clear()


flow = Dataflow("keyed_bursts")
user_amounts(flow, EventLogSource(LOG_DIR, "events", group="keyed_bursts")).process(
    Bursts(), name="bursts"
).sink(EventLogSink(LOG_DIR, "bursts"), name="bursts_sink")
