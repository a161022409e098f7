"""``weirflow upgrade-check``: each compatible change passes, each incompatible one is named."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner
from upgrade_helpers import run_to_savepoint

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig, resolve_job_key
from weirflow.cli import app
from weirflow.errors import ConfigError

# The job's first version; each case below edits one line of it.
BASE = """
from datetime import timedelta
import msgspec
from weirflow import Dataflow, StateMigration, StateSchema
from weirflow.connectors import CollectSink, IterableSource
from weirflow.windows import TumblingWindows


class Acc(msgspec.Struct):
    count: int
    total: int


class CountSum:
    def create_accumulator(self) -> Acc:
        return Acc(0, 0)

    def add(self, value, acc):
        return Acc(acc.count + 1, acc.total + value[1])

    def merge(self, a, b):
        return Acc(a.count + b.count, a.total + b.total)

    def get_result(self, acc):
        return (acc.count, acc.total)


class Totals(CountSum):
    pass


def user(record) -> str:
    return record[0]


flow = Dataflow("shop")
events = flow.source(
    IterableSource([(f"u{i % 5}", i) for i in range(200)]), timestamp=lambda r: r[1] * 10,
    name="events",
)
keyed = events.key_by(user)
keyed.window(TumblingWindows(size=timedelta(seconds=1))).aggregate(
    CountSum(), name="per_user"
).sink(CollectSink(), name="windows")
keyed.reduce(lambda a, b: (a[0], a[1] + b[1]), name="running").sink(CollectSink(), name="totals")
"""

AGG = '    CountSum(), name="per_user"'
RUNNING = 'keyed.reduce(lambda a, b: (a[0], a[1] + b[1]), name="running")'
FILTERED = 'keyed = events.filter(lambda r: r[1] > 3, name="big").key_by(user)'
TOTAL = "    total: int"
TO_FLOAT = "StateMigration(1, 2, lambda f: {**f, 'total': float(f['total'])})"

CASES = [
    # (case, (old line, new line), extra options, exit status, text in the output)
    ("unchanged", ("", ""), [], 0, "a restore would succeed"),
    (
        "filter added",
        ("keyed = events.key_by(user)", FILTERED),
        [], 0, "a restore would succeed",
    ),
    ("parallelism 2 -> 3", ("", ""), ["--parallelism=3"], 0, "a restore would succeed"),
    (
        "stateful operator removed",
        (f'{RUNNING}.sink(CollectSink(), name="totals")', ""),
        [], 1, "'running'",
    ),
    (
        "stateful operator removed, allowed",
        (f'{RUNNING}.sink(CollectSink(), name="totals")', ""),
        ["--allow-non-restored-state"], 0, "dropped: running",
    ),
    ("key type changed", ("def user(record) -> str:", "def user(record) -> int:"), [], 1,
     "operator 'per_user': key type changed: str -> int"),
    ("window size changed", ("size=timedelta(seconds=1)", "size=timedelta(seconds=2)"), [], 1,
     "operator 'per_user': window assigner changed"),
    ("state type changed", ("    CountSum(), name=", "    Totals(), name="), [], 1,
     "operator 'per_user': state type changed"),
    ("renamed, its uid kept", (AGG, AGG.replace('"per_user"', '"counts", uid="per_user"')), [], 0,
     "matched: events, per_user, running"),
    ("renamed without a uid", (AGG, AGG.replace('"per_user"', '"counts"')), [], 1, "'per_user'"),
    ("unnamed stateful operator", (', name="running")', ")"), ["--allow-non-restored-state"], 1,
     "operator 'rolling_reduce_"),
    ("state field added with a default", (TOTAL, f"{TOTAL}\n    largest: int = 0"), [], 0,
     "a restore would succeed"),
    ("state field added without a default", (TOTAL, f"{TOTAL}\n    largest: int"), [], 1,
     "state value class Acc: field 'largest' added without a default"),
    ("state field type changed", (TOTAL, "    total: float"), [], 1,
     "state value class Acc: field 'total' changed type int -> float"),
    ("state field type changed, with a migration",
     (TOTAL, f"    total: float\n    __weirflow_schema__ = StateSchema(2, [{TO_FLOAT}])"), [], 0,
     "a restore would succeed"),
    ("state schema version raised without a migration",
     (TOTAL, f"{TOTAL}\n    __weirflow_schema__ = StateSchema(2)"), [], 1,
     "without a StateMigration from 1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def savepoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The base job run to its end at parallelism 2; a savepoint of its last checkpoint."""
    root = tmp_path_factory.mktemp("upgrade")
    (root / "base.py").write_text(BASE)
    chk = root / "chk"
    run_to_savepoint(root / "base.py", chk, root / "sp")
    return root, chk


@pytest.mark.parametrize(
    ("old", "new", "options", "status", "text"),
    [c[1:] for c in [(c[0], *c[1], *c[2:]) for c in CASES]],
    ids=[c[0] for c in CASES],
)
def test_upgrade_check(
    savepoint: tuple[Path, Path],
    tmp_path: Path,
    old: str,
    new: str,
    options: list[str],
    status: int,
    text: str,
) -> None:
    """Scenario: the job's code changed in one way; upgrade-check says whether it restores."""
    root, chk = savepoint
    assert old in BASE
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(BASE.replace(old, new) if old else BASE))
    result = CliRunner().invoke(
        app,
        ["upgrade-check", str(job), f"--from={root / 'sp'}", f"--checkpoint-dir={chk}", *options],
    )
    assert result.exit_code == status, result.output
    assert text in result.output
    # the restore itself agrees: it succeeds exactly when upgrade-check passed
    key = resolve_job_key(None, str(chk), "shop", create=False).key
    config = CheckpointConfig(
        storage=str(tmp_path / "chk"),
        key=key,
        allow_non_restored_state="--allow-non-restored-state" in options,
    )
    run = load_dataflow(str(job)).run
    parallelism = 3 if "--parallelism=3" in options else 2
    if status == 0:
        run(parallelism, checkpoint=config, restore=str(root / "sp"))
    else:
        with pytest.raises(ConfigError, match="does not restore into job 'shop'"):
            run(parallelism, checkpoint=config, restore=str(root / "sp"))


def test_a_corrupt_savepoint_is_named(savepoint: tuple[Path, Path], tmp_path: Path) -> None:
    """Scenario: a savepoint's state file is damaged: exit 2, naming the file."""
    root, chk = savepoint
    copy = tmp_path / "sp"
    shutil.copytree(root / "sp", copy)
    victim = next(p for p in sorted(copy.rglob("*per_user*")) if p.is_file())
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tmp_path / "job.py").write_text(BASE)
    result = CliRunner().invoke(
        app,
        ["upgrade-check", str(tmp_path / "job.py"), f"--from={copy}", f"--checkpoint-dir={chk}"],
    )
    assert result.exit_code == 2, result.output
    assert victim.name in result.output


def test_an_added_stateful_operator_starts_empty(
    savepoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """Scenario: the next version adds a stateful operator (a running count per user) and
    reads 100 more records; upgrade-check lists it as added, and after the restore it counts
    only the new records while the restored running total goes on from the savepoint."""
    root, chk = savepoint
    added = (
        "TOTALS = CollectSink()\n"
        f'{RUNNING}.sink(TOTALS, name="totals")\n'
        "COUNTS = CollectSink()\n"
        'keyed.map(lambda r: (r[0], 1), name="ones").key_by(lambda kv: kv[0]).reduce(\n'
        '    lambda a, b: (a[0], a[1] + b[1]), name="counted"\n'
        ').sink(COUNTS, name="counts")\n'
    )
    job = tmp_path / "job.py"
    text = BASE.replace(f'{RUNNING}.sink(CollectSink(), name="totals")', added)
    job.write_text(text.replace("range(200)", "range(300)"))
    result = CliRunner().invoke(
        app, ["upgrade-check", str(job), f"--from={root / 'sp'}", f"--checkpoint-dir={chk}"]
    )
    assert result.exit_code == 0, result.output
    assert "added (start empty): counted" in result.output
    key = resolve_job_key(None, str(chk), "shop", create=False).key
    flow = load_dataflow(str(job))
    flow.run(2, checkpoint=CheckpointConfig(storage=str(tmp_path / "chk"), key=key),
             restore=str(root / "sp"))  # fmt: skip
    module = sys.modules["weirflow_job_job"]
    counted = {u: n for u, n in sorted(module.COUNTS.results)}
    assert counted == {f"u{k}": 20 for k in range(5)}  # 100 new records, 20 a user
    totals = dict(sorted((u, t) for u, t in module.TOTALS.results))
    # the restored total goes on: every user's total covers all 300 records
    assert totals == {f"u{k}": sum(range(k, 300, 5)) for k in range(5)}
