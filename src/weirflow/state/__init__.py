"""weirflow.state: keyed state, key groups, state backends, timers, snapshot/restore.

Keys map to key groups (``stable_hash(key) % max_parallelism``); each subtask
owns a contiguous key-group range and snapshots its state per key group, so a
job can restore at another parallelism. Operators declare state by
descriptor (``get_state``) or as raw per-key-group tables (``table``); the
snapshot covers exactly the declared names. See :mod:`weirflow.state.backend`
for the two-part (synchronous, asynchronous) snapshot contract.
"""

from weirflow.state.backend import (
    BackendScope,
    KeyedStateBackend,
    KeyedStateSnapshot,
    StateBackend,
)
from weirflow.state.blob import FORMAT_VERSION, blob_uses_pickle
from weirflow.state.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from weirflow.state.errors import CorruptStateError, UnsupportedStateVersionError
from weirflow.state.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    KeyGroupRange,
    key_group_for_key,
    key_group_range_for_subtask,
    subtask_for_key_group,
)
from weirflow.state.memory import (
    MemoryKeyedStateBackend,
    MemoryKeyedStateSnapshot,
    MemoryStateBackend,
)
from weirflow.state.primitives import ListState, MapState, ValueState
from weirflow.state.restore import (
    KeyedRestoreStats,
    RestoreMethod,
    export_key_groups,
    restore_keyed,
)
from weirflow.state.rocksdb import DEFAULT_CACHE_SIZE_BYTES, RocksDBKeyedStateBackend
from weirflow.state.rocksdb_config import RocksDBStateBackend
from weirflow.state.rocksdb_files import link_or_copy
from weirflow.state.snapshots import (
    FilesSnapshot,
    KeyedOperatorSnapshot,
    KeyedRestore,
    OperatorSnapshot,
    OperatorStateSnapshot,
    PerKeyGroupSnapshot,
    Redistribution,
    RestoredFiles,
)
from weirflow.state.table import KeyedTable, StateTable
from weirflow.state.timers import InternalTimerService, Timer, TimerService, TimerSnapshot

__all__ = [
    "DEFAULT_CACHE_SIZE_BYTES",
    "DEFAULT_MAX_PARALLELISM",
    "FORMAT_VERSION",
    "BackendScope",
    "CorruptStateError",
    "FilesSnapshot",
    "InternalTimerService",
    "KeyGroupRange",
    "KeyedOperatorSnapshot",
    "KeyedRestore",
    "KeyedRestoreStats",
    "KeyedStateBackend",
    "KeyedStateSnapshot",
    "KeyedTable",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "MemoryKeyedStateBackend",
    "MemoryKeyedStateSnapshot",
    "MemoryStateBackend",
    "OperatorSnapshot",
    "OperatorStateSnapshot",
    "PerKeyGroupSnapshot",
    "Redistribution",
    "RestoreMethod",
    "RestoredFiles",
    "RocksDBKeyedStateBackend",
    "RocksDBStateBackend",
    "StateBackend",
    "StateDescriptor",
    "StateKind",
    "StateTable",
    "Timer",
    "TimerService",
    "TimerSnapshot",
    "UnsupportedStateVersionError",
    "ValueState",
    "ValueStateDescriptor",
    "blob_uses_pickle",
    "export_key_groups",
    "key_group_for_key",
    "key_group_range_for_subtask",
    "link_or_copy",
    "restore_keyed",
    "subtask_for_key_group",
]
