"""The dataflow shared by the recovery-test jobs: per user, 1-second tumbling windows of
(count, sum) of the amounts, between a source and a sink each job chooses.

``WF_THROTTLE_US`` sets a per-record pause in the parsing map (microseconds), so
that a test's random kills land while the job runs; once the file that
``WF_THROTTLE_RELEASE`` names exists (a chaos test creates it after its last
kill), the pause ends and the rest of the input runs at full speed.
``WF_SESSION_GAP_MS=N`` makes the windows session windows with a gap of N ms instead.
"""

import json
import os
import time
from datetime import timedelta
from typing import Any

from weirflow import Dataflow, WatermarkStrategy
from weirflow.windows import SessionWindows, TumblingWindows

THROTTLE_S = int(os.environ.get("WF_THROTTLE_US", "0")) / 1e6
THROTTLE_RELEASE = os.environ.get("WF_THROTTLE_RELEASE", "")
SESSION_GAP_MS = int(os.environ.get("WF_SESSION_GAP_MS", "0"))
# set once the release file was seen: no file check per record after that
_released = False


def pause(seconds: float) -> None:
    """Sleep ``seconds`` (a test job's per-record pause), unless the file that
    ``WF_THROTTLE_RELEASE`` names exists: then return at once, from now on."""
    global _released
    if not seconds or _released:
        return
    if THROTTLE_RELEASE and os.path.exists(THROTTLE_RELEASE):
        _released = True
        return
    time.sleep(seconds)


def parse(raw: bytes) -> tuple[str, int]:
    """``{"user": ..., "amount": ...}`` JSON to ``(user, amount)``."""
    e = json.loads(raw)
    pause(THROTTLE_S)
    return (e["user"], e["amount"])


class CountSum:
    """(count, sum) of the amounts in a window."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: tuple[str, int], acc: tuple[int, int]) -> tuple[int, int]:
        return (acc[0] + 1, acc[1] + value[1])

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])

    def get_result(self, acc: tuple[int, int]) -> list[int]:
        return list(acc)


def user_amounts(
    flow: Dataflow, source: Any, out_of_orderness: timedelta = timedelta(seconds=1)
) -> Any:
    """``source``'s raw JSON events as a stream of ``(user, amount)`` keyed by user.

    Event time is the records' time, with watermarks ``out_of_orderness`` behind
    the largest seen.
    """
    return (
        flow.source(
            source,
            watermarks=WatermarkStrategy.bounded_out_of_orderness(out_of_orderness),
            name="events",
        )
        .map(parse, name="parse")
        .key_by(lambda kv: kv[0])
    )


def windowed_sum(name: str, source: Any, sink: Any) -> Dataflow:
    """Build the job named ``name`` from ``source`` (raw JSON values) to ``sink``."""
    flow = Dataflow(name)
    (
        user_amounts(flow, source)
        .window(
            SessionWindows(gap=timedelta(milliseconds=SESSION_GAP_MS))
            if SESSION_GAP_MS
            else TumblingWindows(size=timedelta(seconds=1))
        )
        .aggregate(CountSum(), name="per_user")
        .sink(sink, name="results")
    )
    return flow
