"""Key groups: the unit of keyed-state placement and of rescaling.

A key maps to one of ``max_parallelism`` key groups by a stable hash; each
subtask owns a contiguous range of key groups (Apache Flink's
``KeyGroupRangeAssignment``). Because state is snapshotted per key group, a
job restored at another parallelism only reassigns whole key groups.

Invariant: for every ``1 <= parallelism <= max_parallelism`` the ranges of the
subtasks ``0 .. parallelism - 1`` are disjoint, contiguous, in subtask order,
and together cover ``[0, max_parallelism)``; ``subtask_for_key_group`` is the
inverse of that assignment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zlib import crc32

from weirflow.errors import ConfigError
from weirflow.serde import stable_hash

DEFAULT_MAX_PARALLELISM = 128
"""Number of key groups when the job does not set one; the upper bound on parallelism."""


def key_group_for_key(key: Any, max_parallelism: int) -> int:
    """Return the key group of ``key``.

    Args:
        key: any key :func:`weirflow.serde.stable_hash` accepts.
        max_parallelism: number of key groups (>= 1).

    Returns:
        ``stable_hash(key) % max_parallelism``, an int in ``[0, max_parallelism)``,
        equal in every process and Python version.

    Raises:
        SerdeError: the key cannot be serialized.
    """
    if type(key) is str:
        # Hot path for the most common key type: the same bytes and CRC-32 as
        # weirflow.serde.stable_hash, without two extra Python calls per record.
        return crc32(key.encode("utf-8")) % max_parallelism
    return stable_hash(key) % max_parallelism


@dataclass(frozen=True, slots=True)
class KeyGroupRange:
    """The half-open range ``[start, end)`` of key groups one subtask owns.

    Attributes:
        start: first key group in the range.
        end: one past the last key group; ``end == start`` is the empty range.

    Raises:
        ConfigError: (on construction) ``start < 0`` or ``end < start``.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ConfigError(f"invalid key-group range [{self.start}, {self.end})")

    def __contains__(self, key_group: object) -> bool:
        return type(key_group) is int and self.start <= key_group < self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start

    def is_empty(self) -> bool:
        """Return ``True`` when the range holds no key group."""
        return self.end == self.start

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"


def _check_parallelism(max_parallelism: int, parallelism: int) -> None:
    if not 1 <= parallelism <= max_parallelism:
        raise ConfigError(
            f"parallelism {parallelism} must be between 1 and max_parallelism {max_parallelism}"
        )


def key_group_range_for_subtask(
    max_parallelism: int, parallelism: int, subtask: int
) -> KeyGroupRange:
    """Return the contiguous key-group range owned by ``subtask``.

    Flink's assignment: subtask ``i`` owns
    ``[ceil(i * max_p / p), ceil((i + 1) * max_p / p))``, so ranges differ in
    size by at most one.

    Args:
        max_parallelism: number of key groups.
        parallelism: number of subtasks, ``1 <= parallelism <= max_parallelism``.
        subtask: subtask index in ``[0, parallelism)``.

    Returns:
        The subtask's :class:`KeyGroupRange` (never empty).

    Raises:
        ConfigError: parallelism or subtask out of bounds.
    """
    _check_parallelism(max_parallelism, parallelism)
    if not 0 <= subtask < parallelism:
        raise ConfigError(f"subtask {subtask} out of range for parallelism {parallelism}")
    start = -(-subtask * max_parallelism // parallelism)
    end = -(-(subtask + 1) * max_parallelism // parallelism)
    return KeyGroupRange(start, end)


def subtask_for_key_group(max_parallelism: int, parallelism: int, key_group: int) -> int:
    """Return the subtask that owns ``key_group``.

    Args:
        max_parallelism: number of key groups.
        parallelism: number of subtasks, ``1 <= parallelism <= max_parallelism``.
        key_group: a key group in ``[0, max_parallelism)``.

    Returns:
        ``key_group * parallelism // max_parallelism``, the inverse of
        :func:`key_group_range_for_subtask`.

    Raises:
        ConfigError: parallelism or key group out of bounds.
    """
    _check_parallelism(max_parallelism, parallelism)
    if not 0 <= key_group < max_parallelism:
        raise ConfigError(f"key group {key_group} out of range [0, {max_parallelism})")
    return key_group * parallelism // max_parallelism
