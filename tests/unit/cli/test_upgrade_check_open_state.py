"""State a keyed process function declares inside ``open``: upgrade-check and the restore.

``weirflow upgrade-check`` does not run the job's code, so it cannot see the
descriptors a function builds in ``open``; the run that wrote the savepoint recorded
them (kind and value schema) per task. upgrade-check lists them as unchecked (exit 3);
the restore checks each when ``open`` declares it, by the same rules, naming the
operator, the state and the change, before any record is read. Moving the descriptors
to class attributes lets upgrade-check name the same refusal.
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
from weirflow.serde import StateSchemaError

BASE = """
import msgspec
from weirflow import Dataflow, KeyedProcessFunction
from weirflow.connectors import CollectSink, IterableSource
from weirflow.state import MapStateDescriptor, ValueStateDescriptor

N = 100


class Cart(msgspec.Struct):
    total: int


class Sku(msgspec.Struct, frozen=True):
    code: str
    shelf: int


class Basket(KeyedProcessFunction):
    def open(self, ctx):
        self.cart = ctx.get_state(ValueStateDescriptor("cart", value_type=Cart))
        self.shelves = ctx.get_state(MapStateDescriptor("shelves", key_type=Sku))

    def process_element(self, value, ctx):
        user, i = value
        cart = self.cart.value() or Cart(0)
        self.cart.update(Cart(cart.total + i))
        sku = Sku("s%d" % (i % 3), i % 2)
        self.shelves.put(sku, self.shelves.get(sku, 0) + 1)
        yield (user, i, cart.total + i, sorted(self.shelves.values()))


def user(record) -> str:
    return record[0]


SINK = CollectSink()
flow = Dataflow("shop")
flow.source(IterableSource([(f"u{i % 5}", i) for i in range(N)]), name="events").key_by(
    user
).process(Basket(), name="basket").sink(SINK, name="out")
"""

CART = 'ctx.get_state(ValueStateDescriptor("cart", value_type=Cart))'
SHELF = "    shelf: int"

CASES = [
    # (case, [(old text, new text)], text of the restore's refusal, or None: it restores)
    ("unchanged", [], None),
    ("Cart gains a field with a default", [("    total: int", "    total: int\n    n: int = 0")],
     None),
    ("ValueState 'cart' becomes a MapState", [(CART, CART.replace("Value", "Map"))],
     "operator 'basket': state descriptor 'cart' changed: value -> map"),
    ("Cart's field changes type", [("    total: int", "    total: float")],
     "field 'total' changed type int -> float in the same schema version"),
    ("Cart gains a field without a default", [("    total: int", "    total: int\n    n: int")],
     "Cart"),
    ("the map key class Sku loses a field", [(SHELF, ""), ("i % 3), i % 2)", "i % 3))")],
     "field 'shelf' removed from a hashable class"),
]  # fmt: skip


@pytest.fixture(scope="module")
def savepoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The base job run to its end at parallelism 2; a savepoint of its last checkpoint."""
    return savepoint_of(tmp_path_factory.mktemp("open_state"), BASE)


def _job(tmp_path: Path, edits: list[tuple[str, str]], *, as_attributes: bool = False) -> Path:
    text = BASE
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    if as_attributes:
        # the same descriptors, held as class attributes, where upgrade-check finds them
        opened = text[text.index("        self.cart = ") : text.index("    def process_element")]
        attributes = opened.replace("        self.cart = ctx.get_state(", "    CART = ").replace(
            "        self.shelves = ctx.get_state(", "    SHELVES = "
        )
        attributes = attributes.replace("))\n", ")\n")
        text = text.replace(
            "    def open(self, ctx):\n" + opened,
            attributes
            + "\n    def open(self, ctx):\n        self.cart = ctx.get_state(self.CART)\n"
            "        self.shelves = ctx.get_state(self.SHELVES)\n\n",
        )
    job = tmp_path / "shop.py"
    job.write_text(text)
    return job


def _upgrade_check(root: Path, chk: Path, job: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["upgrade-check", str(job), f"--from={root / 'sp'}", f"--checkpoint-dir={chk}"]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(("edits", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_states_declared_in_open_are_checked_by_the_restore(
    savepoint: tuple[Path, Path],
    tmp_path: Path,
    backend: str,
    edits: list[tuple[str, str]],
    refusal: str | None,
) -> None:
    """Scenario: the function builds its descriptors in open() and the next version changes
    one; upgrade-check says it could not check them (exit 3); the restore (either backend)
    refuses the incompatible change, naming the operator and the change, before any output."""
    root, chk = savepoint
    job = _job(tmp_path, edits)
    status, output = _upgrade_check(root, chk, job)
    assert status == 3, output
    assert "unchecked: operator 'basket': state 'cart' (value)" in output
    assert "unchecked: operator 'basket': state 'shelves' (map)" in output
    flow = load_dataflow(str(job))
    key = resolve_job_key(None, str(chk), "shop", create=False).key
    run = {
        "checkpoint": CheckpointConfig(storage=str(tmp_path / "chk"), key=key),
        "restore": str(root / "sp"),
        "state_backend": make_state_backend(backend, tmp_path),
    }
    if refusal is None:
        flow.run(2, **run)
        return
    with pytest.raises(StateSchemaError) as refused:
        flow.run(2, **run)
    assert "operator 'basket'" in str(refused.value) and refusal in str(refused.value)
    assert sys.modules["weirflow_job_shop"].SINK.results == []


@pytest.mark.parametrize(("edits", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_descriptors_as_attributes_are_checked_by_upgrade_check(
    savepoint: tuple[Path, Path],
    tmp_path: Path,
    edits: list[tuple[str, str]],
    refusal: str | None,
) -> None:
    """Scenario: the next version holds the same descriptors as class attributes; the
    savepoint's recorded states are compared with them: upgrade-check passes each compatible
    change (exit 0) and names each incompatible one (exit 1) as the restore does."""
    root, chk = savepoint
    status, output = _upgrade_check(root, chk, _job(tmp_path, edits, as_attributes=True))
    assert "unchecked" not in output
    if refusal is None:
        assert status == 0, output
        assert "a restore would succeed" in output
    else:
        assert status == 1, output
        assert "operator 'basket'" in output and refusal in output


def test_a_state_schema_error_is_never_dead_lettered(tmp_path: Path) -> None:
    """Scenario: with on_error='dead_letter' and RocksDB (values rebuilt when first read), a
    descriptor without value_type (nothing recorded to check in open) holds Cart, whose
    field then changes type; the first read fails the run naming the operator, instead of
    dead-lettering every record whose key has old state."""
    job = tmp_path / "shop.py"
    config = CheckpointConfig(storage=str(tmp_path / "chk"))
    old = BASE.replace(CART, 'ctx.get_state(ValueStateDescriptor("cart"))').replace(
        'name="basket")', 'name="basket", on_error="dead_letter")'
    )
    job.write_text(old)
    load_dataflow(str(job)).run(
        2, checkpoint=config, restore="none", state_backend=make_state_backend("rocksdb", tmp_path)
    )
    job.write_text(old.replace("    total: int", "    total: float").replace("N = 100", "N = 150"))
    flow = load_dataflow(str(job))
    with pytest.raises(StateSchemaError, match="operator 'basket': state of Cart: field 'total'"):
        flow.run(
            2,
            checkpoint=config,
            restore="latest",
            state_backend=make_state_backend("rocksdb", tmp_path),
        )
    assert sys.modules["weirflow_job_shop"].SINK.results == []
