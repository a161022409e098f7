"""Compiling the logical graph: chaining decisions, network edges, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.errors import ConfigError
from weirflow.graph import Edge, LogicalGraph, compile_plan, is_chainable
from weirflow.windows import TumblingWindows


def windowed_flow() -> Dataflow:
    """source → map → key_by → window → sink, plus the window's late records to a sink."""
    flow = Dataflow("plan")
    windowed = (
        flow.source(
            IterableSource([1, 2, 3]),
            timestamp=lambda v: v,
            watermarks=WatermarkStrategy.monotonous_timestamps(),
            name="src",
        )
        .map(lambda v: v + 1, name="inc")
        .key_by(lambda v: v % 2)
        .window(TumblingWindows(size=timedelta(seconds=1)))
        .count(name="win")
    )
    windowed.sink(CollectSink(), name="out")
    windowed.late_records().sink(CollectSink(), name="late")
    return flow


def names(flow: Dataflow, ids: tuple[int, ...]) -> list[str]:
    return [flow.graph.get(i).name for i in ids]


def test_parallelism_1_chains_everything() -> None:
    flow = windowed_flow()
    plan = compile_plan(flow.graph, 1, 128)
    assert len(plan.chains) == 1
    assert names(flow, plan.chains[0].operators) == ["src", "inc", "win", "out", "late"]
    assert plan.network_edges == ()
    assert len(plan.chained_edges) == 4


def test_key_by_breaks_the_chain_above_parallelism_1() -> None:
    flow = windowed_flow()
    plan = compile_plan(flow.graph, 2, 128)
    assert [names(flow, c.operators) for c in plan.chains] == [
        ["src", "inc"],
        ["win", "out", "late"],
    ]
    (edge,) = plan.network_edges
    assert edge.edge.partitioning == "key_by"
    assert (edge.upstream_chain, edge.downstream_chain) == (0, 1)
    assert edge.downstream_op == flow.graph.get(2).id
    assert plan.inputs_of(1) == [edge]
    assert plan.outputs_of(0) == [edge]
    assert plan.chain_of(flow.graph.get(4).id).index == 1


@pytest.mark.parametrize("parallelism", [1, 3])
def test_union_is_a_chain_head(parallelism: int) -> None:
    flow = Dataflow("union_plan")
    a = flow.source(IterableSource([1]), name="a")
    b = flow.source(IterableSource([2]), name="b")
    a.union(b, name="u").map(lambda v: v, name="m").sink(CollectSink(), name="s")
    plan = compile_plan(flow.graph, parallelism, 128)
    assert [names(flow, c.operators) for c in plan.chains] == [["a"], ["b"], ["u", "m", "s"]]
    assert [(n.upstream_chain, n.input_index) for n in plan.inputs_of(2)] == [(0, 0), (1, 1)]
    assert all(n.edge.partitioning == "forward" for n in plan.network_edges)


@pytest.mark.parametrize("partitioning", ["rebalance", "broadcast", "key_by"])
def test_redistributing_edges_chain_only_at_parallelism_1(partitioning: str) -> None:
    graph = LogicalGraph("g")
    src = graph.add("source")
    edge = Edge(src.id, partitioning, (lambda v: v) if partitioning == "key_by" else None)  # type: ignore[arg-type]
    op = graph.add("map", inputs=(edge,))
    assert is_chainable(edge, op, 1)
    assert not is_chainable(edge, op, 2)
    assert is_chainable(Edge(src.id), op, 4)


def test_a_side_output_edge_chains_like_main() -> None:
    flow = Dataflow("side")
    mapped = flow.source(IterableSource([1]), name="src").map(
        lambda v: v, name="m", on_error="dead_letter"
    )
    mapped.sink(CollectSink(), name="main_sink")
    mapped.dead_letters().sink(CollectSink(), name="dl_sink")
    plan = compile_plan(flow.graph, 2, 128)
    assert [names(flow, c.operators) for c in plan.chains] == [["src", "m", "main_sink", "dl_sink"]]
    outputs = {(flow.graph.get(d).name, e.output) for _, d, e in plan.chained_edges}
    assert ("dl_sink", "dead_letter") in outputs


def test_plan_validation() -> None:
    flow = windowed_flow()
    with pytest.raises(ConfigError, match="parallelism"):
        compile_plan(flow.graph, 0, 128)
    with pytest.raises(ConfigError, match="parallelism"):
        compile_plan(flow.graph, 129, 128)
    with pytest.raises(ConfigError, match="max_parallelism"):
        compile_plan(flow.graph, 1, 0)
    no_sink = Dataflow("no_sink")
    no_sink.source(IterableSource([1])).map(lambda v: v)
    with pytest.raises(ConfigError, match="no sink"):
        compile_plan(no_sink.graph, 1, 128)
    no_source = LogicalGraph("no_source")
    with pytest.raises(ConfigError, match="no source"):
        compile_plan(no_source, 1, 128)


def test_a_dangling_operator_is_refused() -> None:
    flow = Dataflow("dangling")
    src = flow.source(IterableSource([1]))
    src.map(lambda v: v, name="forgotten")
    src.sink(CollectSink())
    with pytest.raises(ConfigError, match="forgotten"):
        compile_plan(flow.graph, 1, 128)


def test_logical_graph_validation() -> None:
    with pytest.raises(ConfigError, match="name"):
        LogicalGraph("bad name!")
    graph = LogicalGraph("g")
    graph.add("source", name="s")
    with pytest.raises(ConfigError, match="used twice"):
        graph.add("map", name="s", inputs=(Edge(0),))
    with pytest.raises(ConfigError, match="unknown operator kind"):
        graph.add("teleport")
    with pytest.raises(ConfigError, match="unknown operator id"):
        graph.add("map", inputs=(Edge(5),))
    m = graph.add("map", inputs=(Edge(0),))
    assert m.name == "map_1"
    assert [op.name for op, _ in graph.downstream(0)] == ["map_1"]
