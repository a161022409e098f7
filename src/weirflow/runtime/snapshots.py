"""Turning task snapshots into checkpoint files (restoring them is :mod:`.state_restore`'s).

Two kinds of operator state leave a task at a barrier:

* **keyed** state (windows, keyed process functions, rolling reduces):
  encoded per key group into one file per operator subtask; the manifest
  records which key groups the file holds, so a restore at another
  parallelism reads only the files overlapping each new subtask's range;
  RocksDB state is uploaded as its checkpoint's files (:mod:`.snapshot_files`);
* **plain** state (source split positions and watermark generators, sink
  committables): kept inline in the manifest when it is built-in data of at
  most :data:`INLINE_STATE_LIMIT` bytes encoded; otherwise in a state file
  of its own: user objects need pickle, which a manifest never holds, and a
  large value (the rows a transactional sink stages for its checkpoint)
  would be base64-encoded, hashed, signed and parsed with the whole manifest
  on every read, on the coordinator, instead of written once beside it.

Unaligned checkpoints add a task's in-flight data as one more state file
(:data:`CHANNEL_STATE`, see :mod:`.inflight`).

Pickle and trust: a state file whose bytes hold a pickle (a keyed-state
blob of user objects, a plain state file) is recorded in the task
snapshot's ``pickled_states`` and may only be written when the storage
signs files; :func:`state_file_uses_pickle` tells, from codec tags alone,
whether a written file holds one.

Snapshots are typed (:mod:`weirflow.state.snapshots`): the manifest records
each operator entry's snapshot type (``kind``) and, for operator state, its
:class:`~weirflow.state.Redistribution` rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weirflow.checkpoint import (
    KEY_ENV,
    KEY_FILE_ENV,
    CheckpointStorage,
    TaskSnapshot,
    state_file_name,
)
from weirflow.errors import CheckpointError, SerdeError
from weirflow.runtime.snapshot_files import upload_files
from weirflow.serde import decode, encode, encode_plain, is_pickled, is_plain
from weirflow.state import (
    FilesSnapshot,
    KeyedOperatorSnapshot,
    KeyGroupRange,
    OperatorSnapshot,
    OperatorStateSnapshot,
    blob_uses_pickle,
)

KEYED = "keyed"
KEYED_FILES = "keyed-files"
PLAIN = "plain"
PLAIN_FILE = "plain-file"
INLINE_STATE_LIMIT = 16 * 1024
"""Largest built-in operator state (bytes, encoded) kept inline in the manifest."""
NEEDS_KEY = (
    f"set a checkpoint key: CheckpointConfig(key=...), ${KEY_ENV} (hex) or ${KEY_FILE_ENV} "
    "(a key file); for a local folder one is generated next to it"
)
"""How to configure the checkpoint key that pickled state needs (ends an error message)."""


class EncodedSnapshot:
    """The synchronous result of one task's snapshot: bytes to write and inline metadata.

    Attributes:
        task_id: the task's name.
        files: operator name → encoded state file (written asynchronously).
        metadata: ``{"subtask": int, "operators": {name: {...}}}``, built-in data only;
            a keyed operator's entry has ``states`` when it declared state by descriptor,
            ``key_class`` when its keys are Structs or dataclasses.
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
                encoded = encode_plain(st.state)
                if len(encoded) <= INLINE_STATE_LIMIT:
                    ops[name] = {"kind": PLAIN, "state": st.state, "redistribution": rule}
                else:
                    files[name] = encoded
                    ops[name] = {"kind": PLAIN_FILE, "redistribution": rule}
            else:
                files[name] = encode(st.state)
                pickled.add(name)
                ops[name] = {"kind": PLAIN_FILE, "redistribution": rule}
        elif st is not None:
            raise TypeError(
                f"operator {name} in {task_id} returned a {type(st).__name__} from "
                "snapshot_state; return a KeyedOperatorSnapshot or an OperatorStateSnapshot"
            )
        if isinstance(st, KeyedOperatorSnapshot):
            # the states it declared (also in a function's open) and its key class: a restore
            # into changed code checks them (weirflow.checkpoint.upgrade, KeyClassCheck)
            if st.states:
                ops[name]["states"] = st.states
            if st.key_class is not None:
                ops[name]["key_class"] = st.key_class
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
            f"{NEEDS_KEY}; or keep the state to built-in types (tuples, dicts, lists...)"
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
