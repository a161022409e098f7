"""In-flight data of an unaligned checkpoint read for the tasks that replay it.

At the checkpoint's parallelism each task replays its own in-flight data
(:mod:`weirflow.runtime.inflight`). At another parallelism the tasks that
captured the data no longer exist as they were, so every captured buffer is
given to the task that must process it now (Flink redistributes in-flight
buffers of a rescaled unaligned checkpoint the same way, by key group):

* a buffer is a set of records on one network edge, on its way to the
  edge's downstream operator: the sender's output data (overtaken in its
  writers) and the receiver's input data (arrived before the barrier) alike;
* records of a ``key_by`` edge carry their keys: each goes to the subtask
  that owns its key group at the new parallelism, as the key's state does;
  records of a ``forward`` or ``rebalance`` edge belong to no subtask in
  particular and are dealt out round robin;
* every buffer becomes input data of its new task, replayed before any new
  input on one of that edge's channels, in the order it was captured (a
  receiver's input data before the data still in its senders' writers).

In-flight watermarks are dropped: a watermark only says that no older
record follows, and the senders send theirs again as they go on (every
source task sends the final one when it ends). Records of a
``broadcast`` edge cannot be redistributed (each receiver's copy is its own),
nor can any edge that is chained at one of the two parallelisms (at
parallelism 1 every edge is chained): these refuse, naming the fix.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping

from weirflow.checkpoint import CheckpointStorage, Manifest
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph, NetworkEdge, PhysicalPlan, compile_plan
from weirflow.runtime.events import Batch
from weirflow.runtime.inflight import ChannelState, InFlightData
from weirflow.runtime.snapshots import CHANNEL_STATE
from weirflow.runtime.state_restore import decode_state_blob
from weirflow.state import key_group_for_key, subtask_for_key_group

# a network edge by what stays the same across parallelisms: upstream operator, its output,
# downstream operator, input position
_EdgeId = tuple[int, str | None, int, int]


def _edge_id(ne: NetworkEdge) -> _EdgeId:
    return (ne.edge.upstream, ne.edge.output, ne.downstream_op, ne.input_index)


def _fan(ne: NetworkEdge, p: int) -> int:
    """Channels per subtask on ``ne``: one for ``forward``, else one per subtask."""
    return 1 if ne.edge.partitioning == "forward" else p


class _Layout:
    """The tasks of a plan: names, and the network edge of each writer and input channel."""

    def __init__(self, graph: LogicalGraph, plan: PhysicalPlan) -> None:
        self.p = plan.parallelism
        self.edges = {_edge_id(ne): ne for ne in plan.network_edges}
        self.task: dict[str, tuple[int, int]] = {}
        self.out_edges: dict[int, list[NetworkEdge]] = {}
        self.in_edges: dict[int, list[NetworkEdge]] = {}
        for chain in plan.chains:
            head = graph.get(chain.head).name
            for i in range(self.p):
                self.task[f"{head}[{i}/{self.p}]"] = (chain.index, i)
            # the order build_job creates writers and input channels in: the plan's edge order
            self.out_edges[chain.index] = [
                ne for ne in plan.network_edges if ne.upstream_chain == chain.index
            ]
            self.in_edges[chain.index] = [
                ne for ne in plan.network_edges if ne.downstream_chain == chain.index
            ]

    def input_edge(self, chain: int, channel: int) -> NetworkEdge:
        """The network edge that input ``channel`` of a task of ``chain`` belongs to."""
        for ne in self.in_edges[chain]:
            if channel < _fan(ne, self.p):
                return ne
            channel -= _fan(ne, self.p)
        raise ConfigError(f"in-flight data of input channel {channel} that no task has")

    def first_channel(self, ne: NetworkEdge, subtask: int) -> int:
        """An input channel of ``ne`` of the task ``subtask`` of its downstream chain."""
        offset = 0
        for other in self.in_edges[ne.downstream_chain]:
            if other is ne:
                return offset
            offset += _fan(other, self.p)
        raise AssertionError("an edge into a chain is among its inputs")

    def empty(self, chain: int) -> InFlightData:
        """In-flight data of a task of ``chain`` holding nothing yet."""
        return InFlightData(
            output=[[[] for _ in range(_fan(ne, self.p))] for ne in self.out_edges[chain]],
            inputs={},
        )


def _captured(old: _Layout, data: Mapping[str, InFlightData]) -> Iterator[tuple[_EdgeId, Batch]]:
    """Every captured buffer with its edge: all receivers' input data, then all senders'."""
    for name, d in sorted(data.items()):
        chain, _ = _task(old, name)
        for channel, items in sorted(d.inputs.items()):
            ne = old.input_edge(chain, channel)
            yield from ((_edge_id(ne), b) for b in items if type(b) is Batch)
    for name, d in sorted(data.items()):
        chain, _ = _task(old, name)
        for ne, per_target in zip(old.out_edges[chain], d.output, strict=True):
            for items in per_target:
                yield from ((_edge_id(ne), b) for b in items if type(b) is Batch)


def _task(layout: _Layout, name: str) -> tuple[int, int]:
    found = layout.task.get(name)
    assert found is not None, "_refusal checked every task"
    return found


def _refusal(
    graph: LogicalGraph, old: _Layout, new: _Layout, holding: Collection[str]
) -> str | None:
    """Why in-flight data of the tasks ``holding`` cannot go from ``old`` to ``new``, if so."""
    fix = f"restore at parallelism {old.p}, take a savepoint, and rescale from that"
    unknown = sorted(set(holding) - set(old.task))
    if unknown:
        return (
            f"the checkpoint holds in-flight records of task(s) {unknown}, which this job does "
            f"not have at parallelism {old.p}: {fix} (or restore with the code that took it)"
        )
    for edge, ne in old.edges.items():
        if edge not in new.edges:
            why = f"chained at parallelism {new.p}"
        elif ne.edge.partitioning == "broadcast":
            why = "a broadcast"
        else:
            continue
        return (
            f"in-flight records into operator {graph.get(edge[2]).name!r} cannot be "
            f"redistributed from parallelism {old.p} to {new.p} (its input is {why}): {fix}"
        )
    return None


def rescale_refusal(graph: LogicalGraph, manifest: Manifest, parallelism: int) -> str | None:
    """Why restoring ``manifest`` at ``parallelism`` cannot redistribute its in-flight data
    (``None`` when it can, or holds none, or keeps its parallelism).

    The rule :func:`rescale_in_flight` applies, without reading any state file: every
    network edge of the job must stay a network edge (no parallelism 1) and none may be a
    ``broadcast``; every task holding in-flight data must be one of the job's.
    """
    holding = [t for t, s in manifest.tasks.items() if CHANNEL_STATE in s.handles]
    if not holding or manifest.parallelism == parallelism:
        return None
    old = _Layout(graph, compile_plan(graph, manifest.parallelism, manifest.max_parallelism))
    new = _Layout(graph, compile_plan(graph, parallelism, manifest.max_parallelism))
    return _refusal(graph, old, new, holding)


def rescale_in_flight(
    graph: LogicalGraph,
    data: Mapping[str, InFlightData],
    old_parallelism: int,
    parallelism: int,
    max_parallelism: int,
) -> dict[str, InFlightData]:
    """Redistribute the in-flight data of a checkpoint taken at ``old_parallelism``.

    Args:
        graph: the job's logical graph (the one that took the checkpoint).
        data: task name (at ``old_parallelism``) → its decoded in-flight data.
        old_parallelism: the checkpoint's parallelism.
        parallelism: the parallelism restored at.
        max_parallelism: the number of key groups.

    Returns:
        Task name (at ``parallelism``) → the in-flight data it replays.

    Raises:
        ConfigError: records in flight on a ``broadcast`` edge, an edge
            chained at either parallelism, or a task the job does not have.
    """
    old = _Layout(graph, compile_plan(graph, old_parallelism, max_parallelism))
    new = _Layout(graph, compile_plan(graph, parallelism, max_parallelism))
    names = {v: k for k, v in new.task.items()}
    out: dict[str, InFlightData] = {}
    dealt: dict[_EdgeId, Iterator[int]] = {}

    def give(ne: NetworkEdge, subtask: int, batch: Batch) -> None:
        name = names[(ne.downstream_chain, subtask)]
        replay = out.setdefault(name, new.empty(ne.downstream_chain))
        replay.inputs.setdefault(new.first_channel(ne, subtask), []).append(batch)

    refused = _refusal(graph, old, new, data)
    if refused is not None:
        raise ConfigError(refused)
    for edge, batch in _captured(old, data):
        ne = new.edges[edge]
        if batch.keys is None:
            turn = dealt.setdefault(edge, itertools.cycle(range(parallelism)))
            give(ne, next(turn), batch)
            continue
        for subtask, part in _by_key_group(batch, parallelism, max_parallelism).items():
            give(ne, subtask, part)
    return out


def _by_key_group(batch: Batch, parallelism: int, max_parallelism: int) -> dict[int, Batch]:
    """Split a keyed buffer by the subtask that owns each record's key group.

    Each record keeps its timestamp and, when the job traces, its headers.
    """
    parts: dict[int, Batch] = {}
    keys = batch.keys
    assert keys is not None
    for i, key in enumerate(keys):
        owner = subtask_for_key_group(
            max_parallelism, parallelism, key_group_for_key(key, max_parallelism)
        )
        part = parts.get(owner)
        if part is None:
            part = parts[owner] = Batch(
                [],
                [] if batch.timestamps is not None else None,
                [],
                [] if batch.headers is not None else None,
            )
        part.values.append(batch.values[i])
        part.keys.append(key)  # type: ignore[union-attr]
        if part.timestamps is not None:
            part.timestamps.append(batch.timestamps[i])  # type: ignore[index]
        if part.headers is not None:
            part.headers.append(batch.headers[i])  # type: ignore[index]
    return parts


def plan_in_flight(
    manifest: Manifest,
    storage: CheckpointStorage,
    parallelism: int,
    task_names: Iterable[str],
    graph: LogicalGraph | None = None,
) -> dict[str, InFlightData]:
    """Read the in-flight data of a checkpoint for the tasks that replay it.

    Args:
        manifest: the checkpoint to restore.
        storage: where its files are (signatures verified on read).
        parallelism: the parallelism restored at.
        task_names: the tasks of the restored job that run here.
        graph: the job's logical graph, to redistribute in-flight data at
            another parallelism (:func:`rescale_in_flight`); without it that
            is refused.

    Returns:
        task name → its in-flight data (tasks without any are left out).

    Raises:
        ConfigError: the checkpoint holds in-flight data that cannot be
            redistributed to ``parallelism``.
        CheckpointCorruptError: a file fails verification.
        CheckpointError: a file holds pickled records and the storage has no
            key to authenticate it.
    """
    holding = {t: s for t, s in manifest.tasks.items() if CHANNEL_STATE in s.handles}
    if not holding:
        return {}
    rescaled = manifest.parallelism != parallelism
    if rescaled and graph is None:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} is an unaligned checkpoint with in-flight "
            f"records in {len(holding)} task(s), taken at parallelism {manifest.parallelism}; "
            f"in-flight records cannot be redistributed to parallelism {parallelism}. Restore it "
            f"at parallelism {manifest.parallelism}, take an aligned checkpoint "
            "(CheckpointConfig(unaligned=False)) or a savepoint, and rescale from that"
        )
    wanted = set(task_names)
    out: dict[str, InFlightData] = {}
    for name, snap in sorted(holding.items()):
        if name not in wanted and not rescaled:
            continue  # another worker's task
        handle = snap.handles[CHANNEL_STATE]
        state = ChannelState.from_bytes(storage.read_state(handle), handle.path)
        out[name] = state.decoded(lambda blob, h=handle: decode_state_blob(storage, h, blob))
    if rescaled:
        assert graph is not None
        out = rescale_in_flight(
            graph, out, manifest.parallelism, parallelism, manifest.max_parallelism
        )
    return {name: data for name, data in out.items() if name in wanted}
