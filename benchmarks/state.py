"""State backends side by side: the memory backend and RocksDB.

1. ``windowed_count`` (docs/workloads.md, 1,000 hot keys) at parallelism 1
   without checkpoints: events/s and peak RSS per backend (target: RocksDB
   ≥ 0.7 × memory), each run in a fresh process;
2. many distinct keys (a running count per key, ``--keys`` distinct keys,
   state ≫ the RocksDB cache): events/s and peak RSS per backend;
3. checkpoint bytes when 1% of ``--ckpt-keys`` keys changed since the last
   checkpoint: incremental (new SST files only) vs a full checkpoint of the
   same state (target: incremental ≤ 5% of full); measured on the keyed
   backend and checkpoint storage directly;
4. restore time of that state: from the local copy, from checkpoint storage,
   and the memory backend from its canonical blobs (state layer only; the
   SIGKILL → first record time of ``checkpointing.py`` adds process start-up).

Usage: ``python benchmarks/state.py [--events N] [--keys K] [--ckpt-keys C] [--quick]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads
from weirflow.checkpoint import CheckpointStorage
from weirflow.runtime.snapshot_files import download_files, upload_files
from weirflow.state import (
    BackendScope,
    KeyGroupRange,
    MemoryKeyedStateBackend,
    MemoryStateBackend,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
    restore_keyed,
)
from weirflow.state.snapshots import KeyedRestore

console = Console()
FULL = KeyGroupRange(0, 128)


def _backend(kind: str, root: str) -> Any:
    return MemoryStateBackend() if kind == "memory" else RocksDBStateBackend(root)


def _windowed_count(kind: str, n: int, out: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        results = workloads.weirflow_job(n, state_backend=_backend(kind, d))
        elapsed = time.perf_counter() - start
    assert sum(r.value[1] for r in results) == n
    out.put((n / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _distinct_keys(kind: str, keys: int, out: Any) -> None:
    from weirflow import Dataflow
    from weirflow.connectors import CollectSink, IterableSource

    flow = Dataflow("distinct_keys")
    sink = CollectSink()
    flow.source(IterableSource(lambda: ((f"k{i}", 1) for i in range(keys)))).key_by(
        lambda e: e[0]
    ).reduce(lambda a, b: (a[0], a[1] + b[1])).filter(lambda e: False).sink(sink)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        flow.run(1, state_backend=_backend(kind, d))
        elapsed = time.perf_counter() - start
    out.put((keys / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _in_process(target: Any, *args: Any) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    result = out.get()
    p.join()
    return result


def _fill(backend: Any, keys: range, value: int) -> None:
    state = backend.get_state(ValueStateDescriptor("v"))
    for i in keys:
        backend.set_current_key(f"key-{i}")
        state.update((value, i))


def _checkpoint_bytes(keys: int, root: Path) -> dict[str, float]:
    """Full vs incremental bytes after 1% of the keys changed, and restore times."""
    storage = CheckpointStorage(str(root / "chk"), "state_bench")
    scope = BackendScope("state_bench", "op", 0, FULL, 128)
    incremental = RocksDBKeyedStateBackend(
        root / "inc" / "op-0", FULL, 128, cache_entries=100_000, incremental=True
    )
    _fill(incremental, range(keys), 1)
    first = upload_files(storage, 1, "t", "op", incremental.snapshot(1))
    incremental.notify_checkpoint_complete(1)
    _fill(incremental, range(0, keys, 100), 2)
    snapshot = incremental.snapshot(2)
    second = upload_files(storage, 2, "t", "op", snapshot)
    reused = {h.path for h in first.values()}
    new_bytes = sum(h.size for h in second.values() if h.path not in reused)
    full = RocksDBStateBackend(root / "full", incremental=False).create_keyed_backend(scope)
    _fill(full, range(keys), 1)
    _fill(full, range(0, keys, 100), 2)
    blobs = full.snapshot().to_bytes_per_key_group()
    full_bytes = sum(len(b) for b in blobs.values())

    files = {name.split("#", 1)[1]: h for name, h in second.items()}
    timings = {}
    for label, local in (("local copy", snapshot.directory), ("storage", None)):
        target = RocksDBStateBackend(root / label.replace(" ", "-")).create_keyed_backend(scope)
        start = time.perf_counter()
        fetched = download_files(storage, files, (0, 128), root / f"dl-{label[0]}", local)
        restore_keyed(target, None, KeyedRestore([], [], None, [fetched]))
        timings[label] = time.perf_counter() - start
        target.close()
    memory = MemoryKeyedStateBackend(FULL)
    start = time.perf_counter()
    memory.restore(blobs.items())
    timings["memory backend"] = time.perf_counter() - start
    incremental.close()
    full.close()
    return {"new": new_bytes, "full": full_bytes, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--ckpt-keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200 k events, 1 M keys, 200 k")
    args = parser.parse_args()
    if args.quick:
        args.events, args.keys, args.ckpt_keys = 200_000, 1_000_000, 200_000

    table = Table(title="state backends")
    for col in ("measure", "memory", "rocksdb", "ratio"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    runs = {k: _in_process(_windowed_count, k, args.events) for k in ("memory", "rocksdb")}
    table.add_row(
        f"windowed_count events/s ({args.events:,})",
        f"{runs['memory'][0]:,.0f}",
        f"{runs['rocksdb'][0]:,.0f}",
        f"{runs['rocksdb'][0] / runs['memory'][0]:.2f}",
    )
    table.add_row(
        "windowed_count peak RSS MB", f"{runs['memory'][1]:.0f}", f"{runs['rocksdb'][1]:.0f}", ""
    )
    keyed = {k: _in_process(_distinct_keys, k, args.keys) for k in ("memory", "rocksdb")}
    table.add_row(
        f"{args.keys:,} distinct keys events/s",
        f"{keyed['memory'][0]:,.0f}",
        f"{keyed['rocksdb'][0]:,.0f}",
        f"{keyed['rocksdb'][0] / keyed['memory'][0]:.2f}",
    )
    table.add_row(
        f"{args.keys:,} distinct keys peak RSS MB",
        f"{keyed['memory'][1]:.0f}",
        f"{keyed['rocksdb'][1]:.0f}",
        "",
    )
    with tempfile.TemporaryDirectory() as d:
        c = _checkpoint_bytes(args.ckpt_keys, Path(d))
    table.add_row(
        f"checkpoint bytes, 1% of {args.ckpt_keys:,} keys changed",
        f"{c['full']:,.0f} (full)",
        f"{c['new']:,.0f} (incremental)",
        f"{c['new'] / c['full']:.3f}",
    )
    table.add_row(
        f"restore {args.ckpt_keys:,} keys, s",
        f"{c['memory backend']:.2f}",
        f"{c['local copy']:.2f} local / {c['storage']:.2f} storage",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    main()
