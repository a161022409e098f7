"""Dead letters: 1% poison records never stop the job, and every record is accounted for."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from weirflow import Dataflow, DeadLetter, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import RuntimeOptions
from weirflow.windows import TumblingWindows

N = 5000


def make_rows() -> tuple[list[dict[str, Any]], set[int]]:
    """``N`` events; every 100th (offset 37) carries an amount that ``int()`` rejects."""
    rows = []
    poison = set()
    for i in range(N):
        amount: Any = str(1 + i % 9)
        if i % 100 == 37:
            amount = f"bad-{i}"
            poison.add(i)
        rows.append({"id": i, "user": f"u{i % 13}", "ts": i * 3, "amount": amount})
    return rows, poison


@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_poison_records_are_dead_lettered_once_and_counts_balance(parallelism: int) -> None:
    """Scenario: 1% of the records make the map function raise; the policy is dead_letter."""
    rows, poison = make_rows()
    flow = Dataflow("poison")
    parsed = flow.source(
        IterableSource(rows, partitions=3),
        timestamp=lambda e: e["ts"],
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=50)),
    ).map(
        lambda e: (e["user"], e["id"], int(e["amount"])),
        name="parse",
        on_error="dead_letter",
    )
    totals, letters = CollectSink(), CollectSink()
    windowed = (
        parsed.key_by(lambda t: t[0])
        .window(TumblingWindows(size=timedelta(seconds=1)))
        .aggregate(CountSum(), name="per_user")
    )
    windowed.sink(totals)
    parsed.dead_letters().sink(letters, name="letters")

    result = flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=64, buffer_size=32))

    dead: list[DeadLetter] = letters.results
    assert Counter(d.value["id"] for d in dead) == Counter(poison)
    for d in dead:
        assert d.operator == "parse"
        assert 0 <= d.subtask < parallelism
        assert d.error_type == "builtins.ValueError"
        assert f"bad-{d.value['id']}" in d.message
        assert "ValueError" in d.traceback
        assert d.attempts == 1
        assert d.timestamp_ms == d.value["ts"]
    parse = result.operators["parse"]
    assert parse.records_in == N
    assert parse.dead_lettered == len(poison)
    assert parse.records_in == parse.records_out + parse.filtered + parse.dead_lettered
    window = result.operators["per_user"]
    assert window.records_in == parse.records_out
    good = [r for r in rows if r["id"] not in poison]
    assert sum(r.value[0] for r in totals.results) == len(good) == window.records_in
    assert sum(r.value[1] for r in totals.results) == sum(int(r["amount"]) for r in good)
    assert result.operators["letters"].records_in == len(poison)


class CountSum:
    """``(count, sum of amounts)`` per window."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: tuple[str, int, int], accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + 1, accumulator[1] + value[2])

    def get_result(self, accumulator: tuple[int, int]) -> tuple[int, int]:
        return accumulator

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])
