"""``weirflow upgrade-check`` and the restore on process-function state and nested Structs.

The job keeps a Struct ``Cart`` holding a ``list[Item]`` in ValueState, ``Note``s in
ListState, ``Item``s in MapState and counts in a MapState keyed by a frozen Struct ``Sku``
(``key_type=``); an aggregate's accumulator holds a ``dict[str, Tally]``.
Each case edits the job; upgrade-check's verdict is checked against a real restore, which
rebuilds every value as the new class (the job file keeps its name, so its module too).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from upgrade_helpers import savepoint_of

from state_backends import STATE_BACKENDS, make_state_backend
from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig, resolve_job_key
from weirflow.cli import app
from weirflow.errors import ConfigError

BASE = """
from datetime import timedelta
import msgspec
from weirflow import Dataflow, KeyedProcessFunction, StateMigration, StateSchema
from weirflow.connectors import CollectSink, IterableSource
from weirflow.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from weirflow.windows import TumblingWindows

N = 100
PRICE = 1


class Item(msgspec.Struct):
    sku: str
    price: int


class Cart(msgspec.Struct):
    lines: list[Item]
    total: int


class Sku(msgspec.Struct, frozen=True):
    code: str
    shelf: int


class Note(msgspec.Struct):
    text: str


class Tally(msgspec.Struct):
    n: int


class Acc(msgspec.Struct):
    by_sku: dict[str, Tally]


class Basket(KeyedProcessFunction):
    CART = ValueStateDescriptor("cart", value_type=Cart)
    SEEN = ListStateDescriptor("seen", value_type=Note)
    LAST = MapStateDescriptor("last", value_type=Item)
    SHELVES = MapStateDescriptor("shelves", key_type=Sku)

    def open(self, ctx):
        self.cart = ctx.get_state(self.CART)
        self.seen = ctx.get_state(self.SEEN)
        self.last = ctx.get_state(self.LAST)
        self.shelves = ctx.get_state(self.SHELVES)

    def process_element(self, value, ctx):
        user, i = value
        cart = self.cart.value() or Cart([], 0)
        item = Item(f"s{i % 3}", i)
        cart = Cart([*cart.lines[-2:], item], cart.total + i * PRICE)
        self.cart.update(cart)
        self.seen.add(Note(str(i)))
        self.last.put(item.sku, item)
        sku = Sku(item.sku, i % 2)
        self.shelves.put(sku, self.shelves.get(sku, 0) + 1)
        yield (user, i, cart.total, len(self.seen.get()), self.last.get(item.sku).price)


class PerSku:
    def create_accumulator(self) -> Acc:
        return Acc({})

    def add(self, value, acc):
        sku = f"s{value[1] % 3}"
        return Acc({**acc.by_sku, sku: Tally(acc.by_sku.get(sku, Tally(0)).n + 1)})

    def merge(self, a, b):
        return Acc({**a.by_sku, **b.by_sku})

    def get_result(self, acc):
        return sorted((k, t.n) for k, t in acc.by_sku.items())


def user(record) -> str:
    return record[0]


SINK = CollectSink()
flow = Dataflow("shop")
keyed = flow.source(
    IterableSource([(f"u{i % 5}", i) for i in range(N)]), timestamp=lambda r: r[1] * 10,
    name="events",
).key_by(user)
keyed.process(Basket(), name="basket").sink(SINK, name="out")
keyed.window(TumblingWindows(size=timedelta(seconds=100))).aggregate(
    PerSku(), name="per_sku"
).sink(CollectSink(), name="skus")
"""

PRICE = "    price: int"
TOTAL = "    total: int"
CART = '    CART = ValueStateDescriptor("cart", value_type=Cart)'
CENTS = "StateMigration(1, 2, lambda f: {**f, 'total': float(f['total'] * 100)})"
CART_V2 = CART.replace(")", f", schema=StateSchema(2, [{CENTS}]))")
TALLY = "    n: int"
SHELF = "    shelf: int"

CASES = [
    # (case, [(old text, new text)], exit status, text in the output)
    ("unchanged", [], 0, "a restore would succeed"),
    ("nested Item in a list gains a field with a default", [(PRICE, f"{PRICE}\n    qty: int = 1")],
     0, "a restore would succeed"),
    ("nested Item gains a field without a default", [(PRICE, f"{PRICE}\n    qty: int")], 1,
     "state value class Item: field 'qty' added without a default"),
    ("nested Item's field type changed", [(PRICE, "    price: float")], 1,
     "operator 'basket': state value class Item: field 'price' changed type int -> float"),
    ("ListState's Note changed type", [("    text: str", "    text: bytes")], 1,
     "state value class Note: field 'text' changed type str -> bytes"),
    ("ValueState's Cart changed type without a migration", [(TOTAL, "    total: float")], 1,
     "state value class Cart: field 'total' changed type int -> float"),
    ("schema on the descriptor, version raised without a migration",
     [(CART, CART.replace(")", ", schema=StateSchema(2))"))], 1,
     "state value class Cart: schema version 1 -> 2 without a StateMigration from 1"),
    ("schema on the descriptor with a migration", [(TOTAL, "    total: float"), (CART, CART_V2)],
     0, "a restore would succeed"),
    ("ValueState 'cart' becomes a ListState", [(CART, CART.replace("Value", "List"))], 1,
     "operator 'basket': state descriptor 'cart' changed: value -> list"),
    ("a state descriptor added", [(CART, f'{CART}\n    EXTRA = ValueStateDescriptor("extra")')],
     0, "a restore would succeed"),
    ("MapState's key class Sku gains a field with a default",
     [(SHELF, f"{SHELF}\n    aisle: int = 0")], 0, "a restore would succeed"),
    ("MapState's key class Sku loses a field (keys would merge)",
     [(SHELF, ""), ("Sku(item.sku, i % 2)", "Sku(item.sku)")], 1,
     "operator 'basket': state value class Sku: field 'shelf' removed from a hashable class"),
    ("Tally inside the accumulator's dict changed type", [(TALLY, "    n: str")], 1,
     "operator 'per_sku': state value class Tally: field 'n' changed type int -> str"),
    ("Tally inside the accumulator's dict gains a field with a default",
     [(TALLY, f"{TALLY}\n    last: int = 0")], 0, "a restore would succeed"),
]  # fmt: skip


@pytest.fixture(scope="module")
def savepoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The base job run to its end at parallelism 2; a savepoint of its last checkpoint."""
    return savepoint_of(tmp_path_factory.mktemp("upgrade_state"), BASE)


def _job(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    text = BASE
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    job = tmp_path / "shop.py"
    job.write_text(text)
    return job


def _config(chk: Path, tmp_path: Path) -> CheckpointConfig:
    key = resolve_job_key(None, str(chk), "shop", create=False).key
    return CheckpointConfig(storage=str(tmp_path / "chk"), key=key)


@pytest.mark.parametrize(
    ("edits", "status", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_upgrade_check_of_nested_and_process_state(
    savepoint: tuple[Path, Path],
    tmp_path: Path,
    edits: list[tuple[str, str]],
    status: int,
    text: str,
) -> None:
    """Scenario: a state value class (nested, or held by a process function's descriptor)
    changed; upgrade-check's verdict and the restore's agree."""
    root, chk = savepoint
    job = _job(tmp_path, edits)
    result = CliRunner().invoke(
        app, ["upgrade-check", str(job), f"--from={root / 'sp'}", f"--checkpoint-dir={chk}"]
    )
    assert result.exit_code == status, result.output
    assert text in result.output
    run = load_dataflow(str(job)).run
    if status == 0:
        run(2, checkpoint=_config(chk, tmp_path), restore=str(root / "sp"))
    else:
        with pytest.raises(ConfigError, match="does not restore into job 'shop'"):
            run(2, checkpoint=_config(chk, tmp_path), restore=str(root / "sp"))


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_a_migration_on_the_descriptor_converts_restored_values(
    savepoint: tuple[Path, Path], tmp_path: Path, backend: str
) -> None:
    """Scenario: the next job version keeps cart totals in cents (Cart.total int -> float,
    prices x100) with the StateMigration on the ValueState descriptor; it restores the
    savepoint (into either state backend: RocksDB decodes values when read) and reads 100
    more records: every running total equals the batch answer in cents, so each restored
    Cart went through the migration once."""
    root, chk = savepoint
    job = _job(
        tmp_path,
        [(TOTAL, "    total: float"), (CART, CART_V2), ("PRICE = 1", "PRICE = 100"),
         ("N = 100", "N = 200")],
    )  # fmt: skip
    load_dataflow(str(job)).run(
        2,
        checkpoint=_config(chk, tmp_path),
        restore=str(root / "sp"),
        state_backend=make_state_backend(backend, tmp_path),
    )
    got = sorted(r[:3] for r in sys.modules["weirflow_job_shop"].SINK.results)
    want = [
        (f"u{i % 5}", i, 100 * sum(j for j in range(0, i + 1) if j % 5 == i % 5))
        for i in range(100, 200)
    ]
    assert got == sorted(want)
    assert all(isinstance(r[2], float) for r in sys.modules["weirflow_job_shop"].SINK.results)
