"""Restoring a checkpoint: its files back into operator state, at any parallelism.

:func:`plan_restore` reads what :mod:`.snapshots` wrote and redistributes
it over the new subtasks. The manifest records each operator entry's
snapshot type (``kind``) and, for operator state, its
:class:`~weirflow.state.Redistribution` rule. Keyed state goes by key
group, into a :class:`~weirflow.state.KeyedRestore` whose watermark is the
minimum of the old subtasks' watermarks it takes key groups from (RocksDB
checkpoints are downloaded, or taken from a verified local copy); operator
state goes by its rule, as ``{old subtask: state}`` (union: sources, where
every subtask picks its own splits; round robin: sinks, where old subtask
``j`` goes to new subtask ``j % parallelism``, which resolves its
transactions).

Pickle and trust: a state file holding a pickle is decoded only when the
storage verified its signature (``CheckpointStorage.authenticated``);
otherwise restore refuses it, naming the file, before decoding anything.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from weirflow.checkpoint import CheckpointCorruptError, CheckpointStorage, Manifest, StateHandle
from weirflow.errors import CheckpointError, ConfigError
from weirflow.graph import LogicalGraph
from weirflow.runtime.snapshot_files import download_files, files_of
from weirflow.runtime.snapshots import KEYED, KEYED_FILES, NEEDS_KEY, PLAIN, PLAIN_FILE
from weirflow.serde import PickleRefusedError, decode
from weirflow.state import (
    KeyedRestore,
    Redistribution,
    RestoredFiles,
    blob_uses_pickle,
    key_group_range_for_subtask,
)

LocalCopies = Callable[[str, int, int], Path | None]
"""``(operator, subtask, checkpoint id) -> local folder`` of a RocksDB checkpoint, or ``None``."""


def plan_restore(
    manifest: Manifest,
    storage: CheckpointStorage,
    graph: LogicalGraph,
    parallelism: int,
    max_parallelism: int,
    local_copies: LocalCopies | None = None,
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
        local_copies: where a subtask of this host kept the files of a
            RocksDB checkpoint (local recovery); those whose checksum matches
            the manifest are not read from storage.

    Returns:
        operator name → new subtask → state for that subtask's ``open``;
        RocksDB checkpoint files are downloaded into a temporary folder that
        :func:`discard_downloads` removes once the subtasks are open.

    Raises:
        ConfigError: different max parallelism, or state for an operator the
            job no longer has.
        CheckpointCorruptError: a state file fails verification (checksum,
            or its signature under the storage's key).
        CheckpointError: a state file holds a pickle and the storage has no
            key to authenticate it; nothing of the file is decoded.
    """
    if manifest.max_parallelism != max_parallelism:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} was taken with max_parallelism="
            f"{manifest.max_parallelism}; restoring needs the same value (got {max_parallelism})"
        )
    entries: dict[str, list[tuple[int, dict[str, Any], Any]]] = {}
    for snap in manifest.tasks.values():
        meta = snap.metadata
        for name, m in meta.get("operators", {}).items():
            if m.get("kind") == KEYED_FILES:
                if not storage.authenticated:
                    raise CheckpointError(
                        f"the RocksDB state of {name} in checkpoint {manifest.checkpoint_id} "
                        f"can only be restored from signed files: {NEEDS_KEY}"
                    )
                handles: Any = files_of(name, snap.handles)
            else:
                handles = snap.handles.get(name)
            entries.setdefault(name, []).append((meta["subtask"], m, handles))
    known = {op.state_id for op in graph.operators}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} holds state of operator(s) {unknown} that this "
            "job does not have; keep operator names stable (name=...) or start fresh"
        )
    restored: dict[str, dict[int, Any]] = {}
    for name, items in entries.items():
        kinds = {m["kind"] for _, m, _ in items}
        if kinds == {KEYED}:
            restored[name] = _keyed(items, storage, parallelism, max_parallelism)
        elif kinds == {KEYED_FILES}:
            local = _local_copies(local_copies, name, manifest.checkpoint_id)
            restored[name] = _keyed_files(items, storage, parallelism, max_parallelism, local)
        elif kinds <= {PLAIN, PLAIN_FILE}:
            restored[name] = _redistributed(name, items, storage, parallelism)
        else:
            raise CheckpointCorruptError(
                f"chk-{manifest.checkpoint_id}",
                f"operator {name} has state of unknown or mixed kinds {sorted(kinds)}",
            )
    return restored


def _local_copies(
    local_copies: LocalCopies | None, operator: str, checkpoint_id: int
) -> Callable[[int], Path | None]:
    if local_copies is None:
        return lambda subtask: None
    return lambda subtask: local_copies(operator, subtask, checkpoint_id)


def _keyed_files(
    items: list[tuple[int, dict[str, Any], Any]],
    storage: CheckpointStorage,
    parallelism: int,
    max_parallelism: int,
    local: Callable[[int], Path | None],
) -> dict[int, KeyedRestore]:
    """RocksDB checkpoints: each new subtask gets the old ones overlapping its key groups."""
    root = Path(tempfile.mkdtemp(prefix="weirflow-restore-"))
    fetched: dict[int, RestoredFiles] = {}
    out: dict[int, KeyedRestore] = {}
    for i in range(parallelism):
        r = key_group_range_for_subtask(max_parallelism, parallelism, i)
        files: list[RestoredFiles] = []
        watermarks: list[int] = []
        for old, m, handles in items:
            start, end = m["key_group_range"]
            if not (start < r.end and r.start < end):
                continue
            if m.get("watermark") is not None:
                watermarks.append(m["watermark"])
            if old not in fetched:
                fetched[old] = download_files(
                    storage, handles, (start, end), root / f"subtask-{old}", local(old)
                )
            files.append(fetched[old])
        watermark = min(watermarks) if watermarks else None
        out[i] = KeyedRestore([], [], watermark, files, *_recorded(items))
    return out


def _recorded(items: list[tuple[int, dict[str, Any], Any]]) -> tuple[dict[str, Any], str | None]:
    """The states every old subtask declared (name -> record) and the key class any of them
    saw: each subtask runs the same code, so any of them tells a new subtask what its
    restored state and keys were written as."""
    states: dict[str, Any] = {}
    key_class = None
    for _, m, _ in items:
        states.update(m.get("states", {}))
        key_class = m.get("key_class") or key_class
    return states, key_class


def _redistributed(
    name: str,
    items: list[tuple[int, dict[str, Any], StateHandle | None]],
    storage: CheckpointStorage,
    parallelism: int,
) -> dict[int, dict[int, Any]]:
    """Operator state: new subtask → {old subtask: state}, by each entry's recorded rule."""
    out: dict[int, dict[int, Any]] = {i: {} for i in range(parallelism)}
    for old, m, handle in sorted(items, key=lambda item: item[0]):
        try:
            rule = Redistribution(m["redistribution"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(
                f"operator {name} subtask {old}: no known redistribution rule in the manifest"
            ) from e
        state = m["state"] if m["kind"] == PLAIN else _read_plain_file(storage, handle, name, old)
        for i in rule.targets(old, parallelism):
            out[i][old] = state
    return out


def _keyed(
    items: list[tuple[int, dict[str, Any], StateHandle | None]],
    storage: CheckpointStorage,
    parallelism: int,
    max_parallelism: int,
) -> dict[int, KeyedRestore]:
    decoded: dict[int, dict[str, dict[int, bytes]]] = {}
    out: dict[int, KeyedRestore] = {}
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
                decoded[old] = _read_keyed_file(storage, handle)
            content = decoded[old]
            state.extend((kg, b) for kg, b in content["state"].items() if kg in r)
            timers.extend((kg, b) for kg, b in content["timers"].items() if kg in r)
        watermark = min(watermarks) if watermarks else None
        out[i] = KeyedRestore(state, timers, watermark, [], *_recorded(items))
    return out


def _refuse_pickle(handle: StateHandle, what: str) -> CheckpointError:
    return CheckpointError(
        f"{handle.path}: {what} holds pickled state, and no checkpoint key is configured to "
        "verify that this weirflow wrote it (unpickling a forged file runs its code); "
        f"{NEEDS_KEY}, with the key the checkpoint was written with"
    )


def _read_keyed_file(storage: CheckpointStorage, handle: StateHandle) -> dict[str, Any]:
    """Read one keyed-state file, refusing pickled blobs the storage could not authenticate."""
    content = decode(storage.read_state(handle))
    if not isinstance(content, dict) or set(content) != {"state", "timers"}:
        raise CheckpointCorruptError(handle.path, "not a keyed-state file")
    if not storage.authenticated:
        for part in ("state", "timers"):
            for kg, blob in content[part].items():
                if blob_uses_pickle(blob):
                    raise _refuse_pickle(handle, f"key group {kg} ({part})")
    return content


def _read_plain_file(
    storage: CheckpointStorage, handle: StateHandle | None, name: str, subtask: int
) -> Any:
    if handle is None:
        raise CheckpointError(f"state of operator {name} subtask {subtask} has no state file")
    data = storage.read_state(handle)
    try:
        return decode(data, allow_pickle=storage.authenticated)
    except PickleRefusedError:
        raise _refuse_pickle(handle, f"the state of operator {name}") from None


def decode_state_blob(storage: CheckpointStorage, handle: StateHandle, blob: bytes) -> Any:
    """Decode one encoded value read from a verified state file.

    Args:
        storage: the storage the file was read from.
        handle: the file (for messages).
        blob: the value's bytes.

    Raises:
        CheckpointError: the value is pickled and the storage has no key to
            authenticate the file; nothing is unpickled.
    """
    try:
        return decode(blob, allow_pickle=storage.authenticated)
    except PickleRefusedError:
        raise _refuse_pickle(handle, "in-flight data") from None


def discard_downloads(restored: Mapping[str, Mapping[int, Any]] | None) -> None:
    """Remove the temporary folders :func:`plan_restore` downloaded RocksDB checkpoints into."""
    for states in (restored or {}).values():
        for state in states.values():
            if isinstance(state, KeyedRestore):
                for files in state.files:
                    shutil.rmtree(files.directory.parent, ignore_errors=True)
