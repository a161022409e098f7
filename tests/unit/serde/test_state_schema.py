"""State schema evolution: Struct and dataclass state restored into a changed class."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig
from weirflow.serde import StateSchemaError

# A running total per user (rolling reduce state is the last Total); {cls} is the class
# of the job's version, {combine} how two Totals make one.
JOB = """
import dataclasses
import msgspec
from weirflow import Dataflow, StateMigration, StateSchema
from weirflow.connectors import CollectSink, IterableSource

def wrap(r):
    return Total(r[0], r[1])

{cls}

def combine(a, b):
    return {combine}

items = [("u%d" % (i % 3), i) for i in range({n})]
flow = Dataflow("totals")
sink = CollectSink()
wrapped = flow.source(IterableSource(items), name="items").map(wrap, name="wrap")
wrapped.key_by(lambda t: t.user).reduce(combine, name="running").sink(sink, name="out")
"""

V1 = """
class Total(msgspec.Struct):
    user: str
    amount: int
    note: str = "v1"
"""
V1_COMBINE = "Total(a.user, a.amount + b.amount)"

CASES = [
    # (case, class of version 2, combine of version 2, restores, text of the refusal)
    ("field added with a default", """
class Total(msgspec.Struct):
    user: str
    amount: int
    note: str = "v1"
    count: int = 1
""", "Total(a.user, a.amount + b.amount, count=a.count + 1)", True, ""),
    ("field removed", """
class Total(msgspec.Struct):
    user: str
    amount: int
""", V1_COMBINE, True, ""),
    ("dataclass instead of Struct", """
@dataclasses.dataclass
class Total:
    user: str
    amount: int
    note: str = "v1"
""", V1_COMBINE, True, ""),
    ("field added without a default", """
class Total(msgspec.Struct):
    user: str
    amount: int
    region: str

def wrap(r):
    return Total(r[0], r[1], "eu")
""", "Total(a.user, a.amount + b.amount, a.region)", False, "region"),
    ("field type changed without a migration", """
class Total(msgspec.Struct):
    user: str
    amount: str
""", "Total(a.user, str(int(a.amount) + int(b.amount)))", False,
     "field 'amount' changed type int -> str"),
    ("field type changed with a migration", """
def to_text(fields):
    return {**fields, "amount": str(fields["amount"])}

class Total(msgspec.Struct):
    user: str
    amount: str
    __weirflow_schema__ = StateSchema(2, [StateMigration(1, 2, to_text)])
""", "Total(a.user, str(int(a.amount) + int(b.amount)))", True, ""),
    ("a newer version without the migration", """
class Total(msgspec.Struct):
    user: str
    amount: int
    __weirflow_schema__ = StateSchema(2)
""", V1_COMBINE, False, "no StateMigration from 1"),
]  # fmt: skip

N1, N2 = 30, 60


def _load(path: Path, cls: str, combine: str, n: int):  # type: ignore[no-untyped-def]
    path.write_text(textwrap.dedent(JOB.format(cls=cls, combine=combine, n=n)))
    return load_dataflow(str(path))


@pytest.mark.parametrize(
    ("cls", "combine", "restores", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_state_restores_into_the_changed_class(
    tmp_path: Path, cls: str, combine: str, restores: bool, refusal: str
) -> None:
    """Scenario: a job's state class changes between two runs; the second restores or is
    refused, naming the class, the field and the fix."""
    config = CheckpointConfig(storage=str(tmp_path / "chk"))
    job = tmp_path / "job.py"
    _load(job, V1, V1_COMBINE, N1).run(2, checkpoint=config, restore="none")
    flow = _load(job, cls, combine, N2)
    if not restores:
        with pytest.raises(Exception, match="Total") as refused:
            flow.run(2, checkpoint=config, restore="latest")
        assert refusal in str(refused.value)
        assert isinstance(refused.value, StateSchemaError)
        return
    flow.run(2, checkpoint=config, restore="latest")
    sink = flow.graph.operators[-1].params["sink"]
    last = {t.user: t for t in sink.results}
    for user in ("u0", "u1", "u2"):
        # the running total continues from the restored state: it covers every item
        assert int(last[user].amount) == sum(i for i in range(N2) if f"u{i % 3}" == user)
    if "count" in combine:
        counted = {u: t.count for u, t in last.items()}
        # restored totals start at the default count 1, then count the new items
        assert counted == {
            u: 1 + sum(1 for i in range(N1, N2) if i % 3 == k)
            for k, u in enumerate(("u0", "u1", "u2"))
        }
