"""Placing a job's subtasks on workers' slots.

A slot hosts one subtask index of every chain (Flink's slot sharing): the
subtasks ``i`` of a source, its map and its window all run in the slot of
index ``i``, so every ``forward`` edge stays inside one worker and only
redistributing edges (``key_by``, ``rebalance``, ``broadcast``) cross
workers. A job at parallelism ``p`` needs ``p`` slots.
"""

from __future__ import annotations

from collections.abc import Sequence

from weirflow.errors import ConfigError


def place(parallelism: int, workers: Sequence[tuple[str, int]]) -> dict[int, str]:
    """Spread subtask indices evenly over workers, in contiguous runs.

    Args:
        parallelism: subtask indices to place, ≥ 1.
        workers: ``(worker id, free slots)`` in preference order.

    Returns:
        subtask index → worker id. Worker ``k`` of ``n`` used gets
        ``parallelism // n`` or one more indices, never more than its slots.

    Raises:
        ConfigError: fewer free slots than ``parallelism``.
    """
    total = sum(slots for _, slots in workers)
    if total < parallelism:
        raise ConfigError(
            f"parallelism {parallelism} needs {parallelism} slots but the workers offer {total}: "
            "start more workers (or give them more --slots), or lower --parallelism"
        )
    usable = [(w, s) for w, s in workers if s > 0]
    share = _shares(parallelism, [s for _, s in usable])
    owners: dict[int, str] = {}
    index = 0
    for (worker, _), count in zip(usable, share, strict=True):
        for _ in range(count):
            owners[index] = worker
            index += 1
    return owners


def _shares(parallelism: int, slots: list[int]) -> list[int]:
    """Even shares capped by each worker's slots; the remainder goes to workers with room."""
    share = [0] * len(slots)
    left = parallelism
    while left:
        open_ = [k for k in range(len(slots)) if share[k] < slots[k]]
        each = max(1, left // len(open_))
        for k in open_:
            take = min(each, slots[k] - share[k], left)
            share[k] += take
            left -= take
            if not left:
                break
    return share
