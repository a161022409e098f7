"""weirflow.state: keyed state, key groups, state backends, timers, snapshot/restore.

Keys map to key groups (``stable_hash(key) % max_parallelism``); each subtask
owns a contiguous key-group range and snapshots its state per key group, so a
job can restore at another parallelism. Operators declare state by
descriptor (``get_state``) or as raw per-key-group tables (``table``); the
snapshot covers exactly the declared names. See :mod:`weirflow.state.backend`
for the two-part (synchronous, asynchronous) snapshot contract.
"""

from weirflow.state.backend import KeyedStateBackend, KeyedStateSnapshot
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
from weirflow.state.memory import MemoryKeyedStateSnapshot, MemoryStateBackend
from weirflow.state.primitives import ListState, MapState, ValueState
from weirflow.state.table import KeyedTable
from weirflow.state.timers import Timer, TimerService, TimerSnapshot

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "FORMAT_VERSION",
    "CorruptStateError",
    "KeyGroupRange",
    "KeyedStateBackend",
    "KeyedStateSnapshot",
    "KeyedTable",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "MemoryKeyedStateSnapshot",
    "MemoryStateBackend",
    "StateDescriptor",
    "StateKind",
    "Timer",
    "TimerService",
    "TimerSnapshot",
    "UnsupportedStateVersionError",
    "ValueState",
    "ValueStateDescriptor",
    "blob_uses_pickle",
    "key_group_for_key",
    "key_group_range_for_subtask",
    "subtask_for_key_group",
]
