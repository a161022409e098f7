"""The keyed state backend interface.

A :class:`StateBackend` is the job's choice of where keyed state lives
(``MemoryStateBackend()``, the default, or ``RocksDBStateBackend(...)``);
the runtime hands it to every operator through the operator's context, and
the operator asks it for one :class:`KeyedStateBackend` and one timer
service per subtask. A keyed backend holds the keyed state of one subtask:
every declared state name, for every key in the subtask's key-group range.

Checkpoint contract, in two parts as in Flink's snapshot strategies:

1. ``snapshot()`` is the synchronous part, run while the task holds the
   barrier: cheap, and the returned object is effectively immutable (updates
   made afterwards never show in it).
2. ``KeyedStateSnapshot.to_bytes_per_key_group()`` is the asynchronous part
   (encoding, possibly in another thread): one self-describing, versioned blob
   per non-empty key group.

``restore(blobs)`` takes blobs from one or many old subtasks (after
rescaling), keeps the key groups in its own range and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, overload, runtime_checkable

from weirflow.state.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.primitives import ListState, MapState, ValueState
from weirflow.state.snapshots import FilesSnapshot
from weirflow.state.table import StateTable
from weirflow.state.timers import InternalTimerService


@runtime_checkable
class KeyedStateSnapshot(Protocol):
    """The result of a backend's synchronous snapshot."""

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode the snapshot: key group -> blob, for non-empty key groups only.

        Raises:
            SerdeError: a state value can be neither msgpack-encoded nor pickled.
        """
        ...


class KeyedStateBackend(Protocol):
    """Keyed state of one subtask, addressed through a current key."""

    @property
    def key_group_range(self) -> KeyGroupRange:
        """The key groups this backend owns."""
        ...

    @property
    def max_parallelism(self) -> int:
        """The number of key groups of the job."""
        ...

    @property
    def current_key(self) -> Any:
        """The current key. Raises StateError when none is set."""
        ...

    @property
    def current_key_group(self) -> int:
        """The current key's group. Raises StateError when no key is set."""
        ...

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """Make ``key`` current (``key_group`` computed when ``None``); StateError out of range."""
        ...

    @overload
    def get_state(self, descriptor: ValueStateDescriptor) -> ValueState: ...
    @overload
    def get_state(self, descriptor: ListStateDescriptor) -> ListState: ...
    @overload
    def get_state(self, descriptor: MapStateDescriptor) -> MapState: ...
    def get_state(
        self, descriptor: ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor
    ) -> ValueState | ListState | MapState:
        """Declare (or look up) a state and return it bound to the current key."""
        ...

    def table(self, name: str) -> StateTable:
        """Declare (or look up) a raw table."""
        ...

    def snapshot(self, checkpoint_id: int | None = None) -> KeyedStateSnapshot | FilesSnapshot:
        """Take the synchronous part of checkpoint ``checkpoint_id``.

        Per-key-group blobs, or (RocksDB, incremental) the files of a local
        database checkpoint.
        """
        ...

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load ``(key_group, blob)`` pairs; StateError on corrupt or unknown-version blobs."""
        ...

    def is_empty(self) -> bool:
        """Return whether no state name holds any entry."""
        ...

    def close(self) -> None:
        """Release files and handles; the backend is unusable afterwards."""
        ...

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed (an incremental backend may reuse its files)."""
        ...


@dataclass(frozen=True, slots=True)
class BackendScope:
    """Which operator subtask a keyed backend is for.

    Attributes:
        job: the job name.
        operator: the operator's name.
        subtask: the subtask index.
        key_group_range: the key groups the subtask owns.
        max_parallelism: the job's number of key groups.
    """

    job: str
    operator: str
    subtask: int
    key_group_range: KeyGroupRange
    max_parallelism: int


@runtime_checkable
class StateBackend(Protocol):
    """Where a job keeps keyed state; creates the per-subtask pieces."""

    def create_keyed_backend(self, scope: BackendScope) -> KeyedStateBackend:
        """Return an empty keyed backend for ``scope``.

        Raises:
            StateError: the backend cannot hold state there (a directory not
                writable, or locked by another live process).
        """
        ...

    def create_timer_service(
        self, scope: BackendScope, keyed: KeyedStateBackend
    ) -> InternalTimerService:
        """Return an empty timer service for ``scope``, stored next to ``keyed``."""
        ...
