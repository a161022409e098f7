"""Turning task snapshots into checkpoint files, and checkpoints back into operator state.

Two kinds of operator state leave a task at a barrier:

* **keyed** state (windows, keyed process functions, rolling reduces):
  encoded per key group into one file per operator subtask; the manifest
  records which key groups the file holds, so a restore at another
  parallelism reads only the files overlapping each new subtask's range;
* **plain** state (source split positions and watermark generators, sink
  committables): small plain data kept inline in the manifest.

Redistribution on restore (any parallelism): keyed state by key group;
source positions are merged (every subtask picks its own splits); the
states of old sink subtask ``j`` go to new subtask ``j % parallelism``,
which resolves their transactions; an operator's restored watermark is the
minimum of the old subtasks' watermarks it takes key groups from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weirflow.checkpoint import (
    CheckpointStorage,
    Manifest,
    StateHandle,
    TaskSnapshot,
    state_file_name,
)
from weirflow.errors import CheckpointError, ConfigError
from weirflow.graph import LogicalGraph
from weirflow.serde import decode, encode
from weirflow.state import KeyGroupRange, key_group_range_for_subtask

KEYED = "keyed"
PLAIN = "plain"


class EncodedSnapshot:
    """The synchronous result of one task's snapshot: bytes to write and inline metadata.

    Attributes:
        task_id: the task's name.
        files: operator name → encoded keyed state (written asynchronously).
        metadata: ``{"subtask": int, "operators": {name: {...}}}``.
    """

    __slots__ = ("files", "metadata", "task_id")

    def __init__(self, task_id: str, files: dict[str, bytes], metadata: dict[str, Any]) -> None:
        self.task_id = task_id
        self.files = files
        self.metadata = metadata


def encode_task_snapshot(
    task_id: str, subtask: int, key_group_range: KeyGroupRange, states: Mapping[str, Any]
) -> EncodedSnapshot:
    """Encode a chain's operator states (the synchronous part of a snapshot).

    Keyed state is serialized here, on the task's thread: serialization is
    the copy that makes the snapshot immune to later in-place updates of
    user accumulators. Writing the bytes is left to the asynchronous part.

    Args:
        task_id: the task's name.
        subtask: the task's subtask index.
        key_group_range: the key groups the task owns.
        states: operator name → what ``snapshot_state`` returned.

    Returns:
        An :class:`EncodedSnapshot`.
    """
    files: dict[str, bytes] = {}
    ops: dict[str, Any] = {}
    for name, st in states.items():
        if st is None:
            continue
        if isinstance(st, dict) and "keyed" in st:
            blobs = st["keyed"].to_bytes_per_key_group()
            timers = st["timers"].to_bytes_per_key_group() if "timers" in st else {}
            files[name] = encode({"state": blobs, "timers": timers})
            ops[name] = {
                "kind": KEYED,
                "key_groups": sorted(set(blobs) | set(timers)),
                "key_group_range": [key_group_range.start, key_group_range.end],
                "watermark": st.get("watermark"),
            }
        else:
            ops[name] = {"kind": PLAIN, "state": st}
    return EncodedSnapshot(task_id, files, {"subtask": subtask, "operators": ops})


def write_task_snapshot(
    storage: CheckpointStorage, checkpoint_id: int, snap: EncodedSnapshot, attempt: int = 0
) -> TaskSnapshot:
    """Write the keyed-state files of one task (the asynchronous part).

    Args:
        storage: the checkpoint storage.
        checkpoint_id: the checkpoint.
        snap: the encoded snapshot.
        attempt: the deployment's attempt number, part of the file names, so
            that a fenced worker of an older attempt still writing a checkpoint
            of the same id never overwrites the current attempt's files.

    Returns:
        The :class:`~weirflow.checkpoint.TaskSnapshot` to acknowledge.

    Raises:
        CheckpointError: a write failed.
    """
    handles = {
        name: storage.write_state(
            checkpoint_id,
            state_file_name(f"{snap.task_id}@{attempt}" if attempt else snap.task_id, name),
            data,
        )
        for name, data in snap.files.items()
    }
    return TaskSnapshot(
        task_id=snap.task_id,
        handles=handles,
        metadata=snap.metadata,
        uses_pickle=any(data[:1] != b"\x01" for data in snap.files.values()),
    )


def plan_restore(
    manifest: Manifest,
    storage: CheckpointStorage,
    graph: LogicalGraph,
    parallelism: int,
    max_parallelism: int,
) -> dict[str, dict[int, Any]]:
    """Redistribute a checkpoint's operator states over ``parallelism`` subtasks.

    Steps:
        1. check the checkpoint fits the job (same max parallelism, every
           operator with state still exists);
        2. group the per-operator entries of every task snapshot;
        3. redistribute each operator's state by its kind (see the module docs).

    Args:
        manifest: the checkpoint to restore.
        storage: where its files are.
        graph: the job's logical graph.
        parallelism: the new parallelism.
        max_parallelism: the job's number of key groups.

    Returns:
        operator name → new subtask → state for that subtask's ``open``.

    Raises:
        ConfigError: different max parallelism, or state for an operator the
            job no longer has.
        CheckpointCorruptError: a state file fails verification.
    """
    if manifest.max_parallelism != max_parallelism:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} was taken with max_parallelism="
            f"{manifest.max_parallelism}; restoring needs the same value (got {max_parallelism})"
        )
    entries: dict[str, list[tuple[int, dict[str, Any], StateHandle | None]]] = {}
    for snap in manifest.tasks.values():
        meta = snap.metadata
        for name, m in meta.get("operators", {}).items():
            entries.setdefault(name, []).append((meta["subtask"], m, snap.handles.get(name)))
    known = {op.name: op for op in graph.operators}
    unknown = sorted(set(entries) - set(known))
    if unknown:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} holds state of operator(s) {unknown} that this "
            "job does not have; keep operator names stable (name=...) or start fresh"
        )
    restored: dict[str, dict[int, Any]] = {}
    for name, items in entries.items():
        kind = known[name].kind
        if items[0][1]["kind"] == KEYED:
            restored[name] = _keyed(items, storage, parallelism, max_parallelism)
        elif kind == "source":
            restored[name] = _merged_source(items, parallelism)
        else:
            restored[name] = {
                i: {j: m["state"] for j, m, _ in items if j % parallelism == i}
                for i in range(parallelism)
            }
    return restored


def _merged_source(
    items: list[tuple[int, dict[str, Any], StateHandle | None]], parallelism: int
) -> dict[int, Any]:
    positions: dict[str, Any] = {}
    watermarks: dict[str, Any] = {}
    for _, m, _ in items:
        positions.update(m["state"]["positions"])
        watermarks.update(m["state"]["watermarks"])
    merged = {"positions": positions, "watermarks": watermarks}
    return dict.fromkeys(range(parallelism), merged)


def _keyed(
    items: list[tuple[int, dict[str, Any], StateHandle | None]],
    storage: CheckpointStorage,
    parallelism: int,
    max_parallelism: int,
) -> dict[int, Any]:
    decoded: dict[int, dict[str, dict[int, bytes]]] = {}
    out: dict[int, Any] = {}
    for i in range(parallelism):
        r = key_group_range_for_subtask(max_parallelism, parallelism, i)
        state: list[tuple[int, bytes]] = []
        timers: list[tuple[int, bytes]] = []
        watermarks: list[int] = []
        for old, m, handle in items:
            start, end = m["key_group_range"]
            if not (start < r.end and r.start < end):
                continue
            if m.get("watermark") is not None:
                watermarks.append(m["watermark"])
            if not any(kg in r for kg in m["key_groups"]):
                continue
            if handle is None:
                raise CheckpointError(f"keyed state of subtask {old} has no state file")
            if old not in decoded:
                decoded[old] = decode(storage.read_state(handle))
            content = decoded[old]
            state.extend((kg, b) for kg, b in content["state"].items() if kg in r)
            timers.extend((kg, b) for kg, b in content["timers"].items() if kg in r)
        out[i] = {
            "state": state,
            "timers": timers,
            "watermark": min(watermarks) if watermarks else None,
        }
    return out
