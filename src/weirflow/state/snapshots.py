"""Typed operator snapshots: what an operator hands over at a barrier, and gets back on restore.

An operator's ``snapshot_state`` returns one of two types, and restore
dispatches on that type (recorded in the manifest), never on the keys of a
dict or on the operator's kind:

* :class:`KeyedOperatorSnapshot`: keyed state, timers and the operator's
  watermark. Written per key group, so it is redistributed by key group on
  a restore at any parallelism; on restore the operator gets a
  :class:`KeyedRestore` holding the blobs of its own key groups.
* :class:`OperatorStateSnapshot`: small per-subtask state (source positions,
  sink committables) with its :class:`Redistribution` rule. On restore the
  operator gets ``{old subtask: state}`` for the old subtasks the rule gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from weirflow.serde.schema_check import StateRecord


@runtime_checkable
class PerKeyGroupSnapshot(Protocol):
    """The synchronous part of a per-key-group snapshot (keyed state or timers)."""

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode: key group -> blob, for non-empty key groups only.

        Raises:
            SerdeError: a value can be neither msgpack-encoded nor pickled.
        """
        ...


class Redistribution(Enum):
    """How the operator states of ``p_old`` subtasks go to ``p_new`` subtasks.

    ``UNION``: every new subtask gets every old subtask's state and picks its
    part (sources: each subtask takes the positions of its own splits).
    ``ROUND_ROBIN``: old subtask ``j`` goes to new subtask ``j % p_new`` (sinks:
    each pending transaction is resolved by exactly one new subtask).
    """

    UNION = "union"
    ROUND_ROBIN = "round_robin"

    def targets(self, old_subtask: int, parallelism: int) -> range:
        """Return the new subtasks that receive ``old_subtask``'s state.

        Args:
            old_subtask: the subtask index in the checkpoint.
            parallelism: the restoring parallelism (>= 1).

        Returns:
            A range of new subtask indices.
        """
        if self is Redistribution.UNION:
            return range(parallelism)
        target = old_subtask % parallelism
        return range(target, target + 1)


@dataclass(frozen=True, slots=True)
class FilesSnapshot:
    """A snapshot that is a set of immutable local files (a RocksDB checkpoint), for upload.

    The runtime uploads each file not in ``reused``: shared files (RocksDB's
    SST files, which never change once written) once into the job's
    ``shared/`` folder, where later checkpoints reference them again; the
    other, small files into the checkpoint's own folder. It reports every
    uploaded shared file through ``on_uploaded``, so that later snapshots
    reuse it.

    Attributes:
        directory: the local folder holding the files (kept for local recovery).
        files: file name -> size in bytes.
        shared: the names in ``files`` that go to ``shared/`` (immutable files).
        reused: shared file name -> the handle of an earlier upload of the same file.
        instance: a name unique to the database that wrote the files (shared
            file names are ``<instance>/<file>``).
        key_group_range: ``(start, end)`` of the key groups the files hold.
        on_uploaded: called with ``(file name, handle)`` after a shared file's upload.
    """

    directory: Path
    files: dict[str, int]
    shared: frozenset[str]
    reused: dict[str, Any]
    instance: str
    key_group_range: tuple[int, int]
    on_uploaded: Callable[[str, Any], None]


@dataclass(frozen=True, slots=True)
class RestoredFiles:
    """One old subtask's :class:`FilesSnapshot`, downloaded (or found locally) for a restore.

    Attributes:
        directory: a local folder with every file of the snapshot.
        key_group_range: ``(start, end)`` of the key groups the files hold.
        shared: shared file name -> its handle, so the restored database
            can reference them again instead of uploading them anew.
    """

    directory: Path
    key_group_range: tuple[int, int]
    shared: dict[str, Any]


@dataclass(frozen=True, slots=True)
class KeyedOperatorSnapshot:
    """Keyed state, timers and watermark of one keyed operator subtask.

    Attributes:
        state: the keyed state backend's synchronous snapshot: per-key-group
            blobs, or the files of a RocksDB checkpoint (incremental).
        timers: the timer service's synchronous snapshot, or ``None`` (no
            timers, or timers inside the files of ``state``).
        watermark_ms: the operator's event-time watermark, or ``None``.
        states: each state the operator declared by descriptor, also inside
            a function's ``open``: name -> its record (kind and value schema,
            :func:`weirflow.serde.schema_check.state_record`), so that a
            restore into changed code can check states no attribute declares.
        key_class: the schema record of the operator's key class when its keys
            are Structs or dataclasses (a restore refuses a changed one: its
            keys would hash to other key groups), else ``None``.
    """

    state: PerKeyGroupSnapshot | FilesSnapshot
    timers: PerKeyGroupSnapshot | None = None
    watermark_ms: int | None = None
    states: dict[str, StateRecord] = field(default_factory=dict)
    key_class: str | None = None


@dataclass(frozen=True, slots=True)
class OperatorStateSnapshot:
    """Per-subtask operator state and the rule that redistributes it.

    Attributes:
        state: the state; built-in data of up to 16 KiB encoded is kept inline
            in the manifest, larger data and other objects (pickled, signed) go
            to a state file of their own.
        redistribution: how restore spreads it over another parallelism.
    """

    state: Any
    redistribution: Redistribution


OperatorSnapshot = KeyedOperatorSnapshot | OperatorStateSnapshot
"""What ``OperatorLogic.snapshot_state`` returns (or ``None`` for no state)."""


@dataclass(frozen=True, slots=True)
class KeyedRestore:
    """What a keyed operator subtask's ``open`` gets on restore.

    Attributes:
        state: ``(key_group, blob)`` pairs of keyed state for this subtask's
            key groups (from one or many old subtasks).
        timers: ``(key_group, blob)`` pairs of timers, likewise.
        watermark_ms: the minimum watermark of the old subtasks whose key
            groups this subtask takes, or ``None``.
        files: RocksDB checkpoints of old subtasks whose key groups overlap
            this subtask's (state and timers both); restore them with
            :func:`weirflow.state.restore_keyed`.
        states: the recorded declared states of the old subtasks
            (:attr:`KeyedOperatorSnapshot.states`), name -> record.
        key_class: the recorded key class (:attr:`KeyedOperatorSnapshot.key_class`).
    """

    state: list[tuple[int, bytes]]
    timers: list[tuple[int, bytes]]
    watermark_ms: int | None
    files: list[RestoredFiles] = field(default_factory=list)
    states: dict[str, StateRecord] = field(default_factory=dict)
    key_class: str | None = None
