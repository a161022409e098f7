"""A small keyed job for the checkpoint security tests.

``WF_STATE=plain``: the rolling state is tuples, dicts, lists, ints and strs
(no pickle anywhere). ``WF_STATE=object``: it is a user class (pickled).
``WF_OUT``: the output folder.
"""

from __future__ import annotations

import os

from weirflow import Dataflow
from weirflow.connectors import FileSink, IterableSource

N = 2_000


class Tally:
    """A user-class accumulator: only pickle can store it."""

    def __init__(self, key: str, total: int) -> None:
        self.key = key
        self.total = total

    def __repr__(self) -> str:
        return f"Tally({self.key!r}, {self.total})"


def _plain(i: int) -> tuple:
    return (f"k{i % 7}", i, (i, [i % 3]), {"n": 1, "seen": [i]})


def _plain_step(acc: tuple, rec: tuple) -> tuple:
    return (
        acc[0],
        acc[1] + rec[1],
        (max(acc[2][0], rec[2][0]), acc[2][1][-2:] + rec[2][1]),
        {
            "n": acc[3]["n"] + 1,
            "seen": acc[3]["seen"][-2:] + rec[3]["seen"],
        },
    )


def _object(i: int) -> Tally:
    return Tally(f"k{i % 7}", i)


def _object_step(acc: Tally, rec: Tally) -> Tally:
    return Tally(acc.key, acc.total + rec.total)


_OBJECT = os.environ.get("WF_STATE") == "object"
flow = Dataflow("sec")
(
    flow.source(IterableSource(range(N)), name="numbers")
    .map(_object if _OBJECT else _plain, name="rows")
    .key_by(lambda r: r.key if _OBJECT else r[0])
    .reduce(_object_step if _OBJECT else _plain_step, name="totals")
    .sink(FileSink(os.environ["WF_OUT"], encode=repr), name="files")
)
