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
   SIGKILL → first record time of ``checkpointing.py`` adds process start-up);
5. restore time of ``--restore-mb`` MB of RocksDB state (1 KiB random values),
   from the local copy vs from checkpoint storage, and the peak RSS of the
   process that wrote it;
6. rescaling restore of ``--ckpt-keys`` keys from RocksDB checkpoints of 2
   subtasks into 3: ``restore_keyed`` (a base checkpoint opened where one
   qualifies, the rest ingested as SST files) vs read out and written key by
   key (state layer only, the 3 new subtasks one after another).

Usage: ``python benchmarks/state.py [--events N] [--keys K] [--ckpt-keys C]
[--restore-mb M] [--quick]``; ``--only 5`` runs one part (6 runs only with ``--only 6``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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
    RestoredFiles,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
    export_key_groups,
    key_group_for_key,
    key_group_range_for_subtask,
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


def _restore_large(megabytes: int, root: Path, out: Any) -> None:
    """Write ``megabytes`` MB of state, checkpoint it, time both restore paths."""
    storage = CheckpointStorage(str(root / "chk"), "state_bench")
    scope = BackendScope("state_bench", "op", 0, FULL, 128)
    keyed = RocksDBStateBackend(root / "big", cache_size_bytes=16 << 20).create_keyed_backend(scope)
    table = keyed.table("blobs")
    for i in range(megabytes * 1024):
        table.put(i % 128, i, os.urandom(1024))
    snapshot = keyed.snapshot(1)
    handles = upload_files(storage, 1, "t", "op", snapshot)
    files = {name.split("#", 1)[1]: h for name, h in handles.items()}
    timings = {"bytes": float(sum(h.size for h in handles.values()))}
    for label, local in (("local copy", snapshot.directory), ("storage", None)):
        target = RocksDBStateBackend(root / label.replace(" ", "-")).create_keyed_backend(scope)
        start = time.perf_counter()
        fetched = download_files(storage, files, (0, 128), root / f"dl-{label[0]}", local)
        restore_keyed(target, None, KeyedRestore([], [], None, [fetched]))
        timings[label] = time.perf_counter() - start
        target.close()
    keyed.close()
    timings["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(timings)


def _rescale_restore(keys: int, root: Path) -> dict[str, float]:
    """Seconds to restore the state of 2 RocksDB subtasks into 3: ingested vs key by key."""
    old = RocksDBStateBackend(root / "old", cache_size_bytes=16 << 20)
    sources = []
    for subtask in range(2):
        kg_range = key_group_range_for_subtask(128, 2, subtask)
        keyed = old.create_keyed_backend(BackendScope("bench", "op", subtask, kg_range, 128))
        table = keyed.table("v")
        for i in range(keys):
            kg = key_group_for_key(i, 128)
            if kg in kg_range:
                table.put(kg, i, ("value", i, os.urandom(32)))
        files = keyed.snapshot(1)
        sources.append(RestoredFiles(files.directory, files.key_group_range, {}))
        keyed.close()
    timings = {"ingested": 0.0, "key by key": 0.0}
    for label in timings:
        backend = RocksDBStateBackend(root / label.replace(" ", "-"))
        for subtask in range(3):
            kg_range = key_group_range_for_subtask(128, 3, subtask)
            scope = BackendScope("bench", "op", subtask, kg_range, 128)
            target = backend.create_keyed_backend(scope)
            start = time.perf_counter()
            if label == "ingested":
                restore_keyed(target, None, KeyedRestore([], [], None, sources))
            else:
                for source in sources:
                    blobs, _ = export_key_groups(source.directory, kg_range, 128)
                    target.restore(blobs.items())
            timings[label] += time.perf_counter() - start
            target.close()
    return timings


def _restore_large_in(megabytes: int, out: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        _restore_large(megabytes, Path(d), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--ckpt-keys", type=int, default=1_000_000)
    parser.add_argument("--restore-mb", type=int, default=1024)
    parser.add_argument("--only", type=int, choices=range(1, 7), help="run only this part")
    parser.add_argument("--quick", action="store_true", help="200 k events, 1 M keys, 200 k, 64 MB")
    args = parser.parse_args()
    if args.quick:
        args.events, args.keys, args.ckpt_keys = 200_000, 1_000_000, 200_000
        args.restore_mb = 64
    parts = {args.only} if args.only else {1, 2, 3, 5}

    table = Table(title="state backends")
    for col in ("measure", "memory", "rocksdb", "ratio"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    if 1 in parts:
        _add_windowed_count(table, args.events)
    if 2 in parts:
        _add_distinct_keys(table, args.keys)
    if parts & {3, 4}:
        _add_checkpoint_bytes(table, args.ckpt_keys)
    if 5 in parts:
        big = _in_process(_restore_large_in, args.restore_mb)
        table.add_row(
            f"restore {big['bytes'] / 1e9:.2f} GB RocksDB state, s",
            "",
            f"{big['local copy']:.2f} local / {big['storage']:.2f} storage",
            f"RSS {big['rss']:.0f} MB",
        )
    if 6 in parts:
        with tempfile.TemporaryDirectory() as d:
            r = _rescale_restore(args.ckpt_keys, Path(d))
        table.add_row(
            f"rescale 2 -> 3, {args.ckpt_keys:,} keys, s",
            "",
            f"{r['ingested']:.2f} ingested / {r['key by key']:.2f} key by key",
            f"{r['key by key'] / r['ingested']:.1f}x",
        )
    console.print(table)


def _add_windowed_count(table: Table, events: int) -> None:
    runs = {k: _in_process(_windowed_count, k, events) for k in ("memory", "rocksdb")}
    table.add_row(
        f"windowed_count events/s ({events:,})",
        f"{runs['memory'][0]:,.0f}",
        f"{runs['rocksdb'][0]:,.0f}",
        f"{runs['rocksdb'][0] / runs['memory'][0]:.2f}",
    )
    table.add_row(
        "windowed_count peak RSS MB", f"{runs['memory'][1]:.0f}", f"{runs['rocksdb'][1]:.0f}", ""
    )


def _add_distinct_keys(table: Table, keys: int) -> None:
    keyed = {k: _in_process(_distinct_keys, k, keys) for k in ("memory", "rocksdb")}
    table.add_row(
        f"{keys:,} distinct keys events/s",
        f"{keyed['memory'][0]:,.0f}",
        f"{keyed['rocksdb'][0]:,.0f}",
        f"{keyed['rocksdb'][0] / keyed['memory'][0]:.2f}",
    )
    table.add_row(
        f"{keys:,} distinct keys peak RSS MB",
        f"{keyed['memory'][1]:.0f}",
        f"{keyed['rocksdb'][1]:.0f}",
        "",
    )


def _add_checkpoint_bytes(table: Table, ckpt_keys: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        c = _checkpoint_bytes(ckpt_keys, Path(d))
    table.add_row(
        f"checkpoint bytes, 1% of {ckpt_keys:,} keys changed",
        f"{c['full']:,.0f} (full)",
        f"{c['new']:,.0f} (incremental)",
        f"{c['new'] / c['full']:.3f}",
    )
    table.add_row(
        f"restore {ckpt_keys:,} keys, s",
        f"{c['memory backend']:.2f}",
        f"{c['local copy']:.2f} local / {c['storage']:.2f} storage",
        "",
    )


if __name__ == "__main__":
    main()
