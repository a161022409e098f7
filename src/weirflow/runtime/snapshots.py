"""Turning task snapshots into checkpoint files, and checkpoints back into operator state.

Two kinds of operator state leave a task at a barrier:

* **keyed** state (windows, keyed process functions, rolling reduces):
  encoded per key group into one file per operator subtask; the manifest
  records which key groups the file holds, so a restore at another
  parallelism reads only the files overlapping each new subtask's range;
* **plain** state (source split positions and watermark generators, sink
  committables): small data kept inline in the manifest when it is built-in
  data; otherwise (user objects, which need pickle) in a state file of its
  own, because a manifest never holds pickles.

Pickle and trust: a state file whose bytes hold a pickle (a keyed-state
blob of user objects, a plain state file) is recorded in the task
snapshot's ``pickled_states``, may only be written when the storage signs
files, and is decoded on restore only when the storage verified its
signature (``CheckpointStorage.authenticated``); otherwise restore refuses
it, naming the file, before decoding anything.

Snapshots are typed (:mod:`weirflow.state.snapshots`), and so is restore:
the manifest records each operator entry's snapshot type (``kind``) and,
for operator state, its :class:`~weirflow.state.Redistribution` rule.
Redistribution on restore (any parallelism): keyed state by key group, into
a :class:`~weirflow.state.KeyedRestore` whose watermark is the minimum of
the old subtasks' watermarks it takes key groups from; operator state by
its rule, as ``{old subtask: state}`` (union: sources, where every subtask
picks its own splits; round robin: sinks, where old subtask ``j`` goes to
new subtask ``j % parallelism``, which resolves its transactions).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from weirflow.checkpoint import (
    KEY_ENV,
    KEY_FILE_ENV,
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    StateHandle,
    TaskSnapshot,
    state_file_name,
)
from weirflow.errors import CheckpointError, ConfigError, SerdeError
from weirflow.graph import LogicalGraph
from weirflow.runtime.snapshot_files import download_files, files_of, upload_files
from weirflow.serde import (
    PickleRefusedError,
    decode,
    encode,
    encode_plain,
    is_pickled,
    is_plain,
)
from weirflow.state import (
    FilesSnapshot,
    KeyedOperatorSnapshot,
    KeyedRestore,
    KeyGroupRange,
    OperatorSnapshot,
    OperatorStateSnapshot,
    Redistribution,
    RestoredFiles,
    blob_uses_pickle,
    key_group_range_for_subtask,
)

LocalCopies = Callable[[str, int, int], Path | None]
"""``(operator, subtask, checkpoint id) -> local folder`` of a RocksDB checkpoint, or ``None``."""

KEYED = "keyed"
KEYED_FILES = "keyed-files"
PLAIN = "plain"
PLAIN_FILE = "plain-file"
_NEEDS_KEY = (
    f"set a checkpoint key: CheckpointConfig(key=...), ${KEY_ENV} (hex) or ${KEY_FILE_ENV} "
    "(a key file); for a local folder one is generated next to it"
)


class EncodedSnapshot:
    """The synchronous result of one task's snapshot: bytes to write and inline metadata.

    Attributes:
        task_id: the task's name.
        files: operator name → encoded state file (written asynchronously).
        metadata: ``{"subtask": int, "operators": {name: {...}}}``, built-in data only.
        pickled: names in ``files`` (or ``uploads``) whose bytes may hold a pickle.
        uploads: operator name → local RocksDB checkpoint to upload incrementally.
    """

    __slots__ = ("files", "metadata", "pickled", "task_id", "uploads")

    def __init__(
        self,
        task_id: str,
        files: dict[str, bytes],
        metadata: dict[str, Any],
        pickled: frozenset[str],
        uploads: dict[str, FilesSnapshot] | None = None,
    ) -> None:
        self.task_id = task_id
        self.files = files
        self.metadata = metadata
        self.pickled = pickled
        self.uploads = uploads or {}


def encode_task_snapshot(
    task_id: str,
    subtask: int,
    key_group_range: KeyGroupRange,
    states: Mapping[str, OperatorSnapshot | None],
) -> EncodedSnapshot:
    """Encode a chain's operator snapshots (the synchronous part of a snapshot).

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

    Raises:
        TypeError: an operator returned something other than a typed snapshot.
    """
    files: dict[str, bytes] = {}
    ops: dict[str, Any] = {}
    pickled: set[str] = set()
    uploads: dict[str, FilesSnapshot] = {}
    for name, st in states.items():
        if isinstance(st, KeyedOperatorSnapshot) and isinstance(st.state, FilesSnapshot):
            uploads[name] = st.state
            # the database's values are encoded like blobs: user objects are pickles
            pickled.add(name)
            ops[name] = {
                "kind": KEYED_FILES,
                "key_group_range": list(st.state.key_group_range),
                "watermark": st.watermark_ms,
            }
        elif isinstance(st, KeyedOperatorSnapshot):
            blobs = st.state.to_bytes_per_key_group()
            timers = st.timers.to_bytes_per_key_group() if st.timers is not None else {}
            files[name] = encode_plain({"state": blobs, "timers": timers})
            if any(blob_uses_pickle(b) for b in (*blobs.values(), *timers.values())):
                pickled.add(name)
            ops[name] = {
                "kind": KEYED,
                "key_groups": sorted(set(blobs) | set(timers)),
                "key_group_range": [key_group_range.start, key_group_range.end],
                "watermark": st.watermark_ms,
            }
        elif isinstance(st, OperatorStateSnapshot):
            if st.state is None:
                continue
            rule = st.redistribution.value
            if is_plain(st.state):
                ops[name] = {"kind": PLAIN, "state": st.state, "redistribution": rule}
            else:
                files[name] = encode(st.state)
                pickled.add(name)
                ops[name] = {"kind": PLAIN_FILE, "redistribution": rule}
        elif st is not None:
            raise TypeError(
                f"operator {name} in {task_id} returned a {type(st).__name__} from "
                "snapshot_state; return a KeyedOperatorSnapshot or an OperatorStateSnapshot"
            )
    meta = {"subtask": subtask, "operators": ops}
    return EncodedSnapshot(task_id, files, meta, frozenset(pickled), uploads)


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
        CheckpointError: a write failed, or state needs pickle and the
            storage has no key to sign it with (it could never be restored).
    """
    if snap.pickled and not storage.authenticated:
        raise CheckpointError(
            f"state of {', '.join(sorted(snap.pickled))} in {snap.task_id} holds objects that "
            "need pickle, and pickled checkpoint state must be signed to be restorable: "
            f"{_NEEDS_KEY}; or keep the state to built-in types (tuples, dicts, lists...)"
        )
    prefix = f"{snap.task_id}@{attempt}" if attempt else snap.task_id
    handles = {
        name: storage.write_state(checkpoint_id, state_file_name(prefix, name), data)
        for name, data in snap.files.items()
    }
    for name, files in snap.uploads.items():
        handles.update(upload_files(storage, checkpoint_id, prefix, name, files))
    return TaskSnapshot(
        task_id=snap.task_id,
        handles=handles,
        metadata=snap.metadata,
        pickled_states=snap.pickled,
    )


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
                        f"can only be restored from signed files: {_NEEDS_KEY}"
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
        out[i] = KeyedRestore([], [], min(watermarks) if watermarks else None, files)
    return out


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
        out[i] = KeyedRestore(state, timers, min(watermarks) if watermarks else None)
    return out


def state_file_uses_pickle(payload: bytes) -> bool:
    """Return whether the payload of a state file written here holds any pickle.

    Looks only at codec tags (the keyed-state file's index of blobs is
    msgpack and is decoded with pickle refused); runs no code from the file.

    Args:
        payload: what :meth:`CheckpointStorage.read_state` returned.

    Returns:
        ``True`` when the file or any key-group blob in it is pickled.

    Raises:
        CheckpointError: the payload is neither a keyed-state nor a plain state file.
    """
    if is_pickled(payload):
        return True
    try:
        content = decode(payload)
    except SerdeError as e:
        raise CheckpointError(f"not a weirflow state file: {e}") from e
    if isinstance(content, dict) and set(content) == {"state", "timers"}:
        return any(
            isinstance(blob, bytes) and blob_uses_pickle(blob)
            for part in content.values()
            if isinstance(part, dict)
            for blob in part.values()
        )
    if isinstance(content, dict) and "version" in content and "inputs" in content:
        # in-flight data: an index of encoded items (runtime/inflight.py), nested in lists
        return _any_pickled((content.get("output"), content.get("inputs")))
    return False


def _any_pickled(tree: Any) -> bool:
    if isinstance(tree, bytes):
        return is_pickled(tree)
    if isinstance(tree, list | tuple):
        return any(_any_pickled(x) for x in tree)
    return False


def _refuse_pickle(handle: StateHandle, what: str) -> CheckpointError:
    return CheckpointError(
        f"{handle.path}: {what} holds pickled state, and no checkpoint key is configured to "
        "verify that this weirflow wrote it (unpickling a forged file runs its code); "
        f"{_NEEDS_KEY}, with the key the checkpoint was written with"
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


# -- in-flight data of unaligned checkpoints (see runtime/inflight.py) ---------------

CHANNEL_STATE = "_in_flight"
"""The key of a task's in-flight data file among its files and handles (never an operator's)."""
IN_FLIGHT_ITEMS = "in_flight_items"
"""The task metadata entry counting the buffers and watermarks in its in-flight data file."""


def with_channel_state(
    snap: EncodedSnapshot, data: bytes, items: int, pickled: bool
) -> EncodedSnapshot:
    """Add a task's encoded in-flight data as a state file of its snapshot.

    Args:
        snap: the task's encoded operator states.
        data: the in-flight data file's content.
        items: buffers and watermarks in it (recorded in the metadata as :data:`IN_FLIGHT_ITEMS`).
        pickled: whether an item in it needs pickle (the file must then be signed).

    Returns:
        A new :class:`EncodedSnapshot` with the file under :data:`CHANNEL_STATE`.
    """
    return EncodedSnapshot(
        snap.task_id,
        {**snap.files, CHANNEL_STATE: data},
        {**snap.metadata, IN_FLIGHT_ITEMS: items},
        snap.pickled | {CHANNEL_STATE} if pickled else snap.pickled,
    )


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
