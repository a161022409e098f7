"""The builder: what each Stream method adds to the logical graph, and what it refuses."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import timedelta

import pytest

from weirflow import ConfigError, Dataflow, RetryPolicy, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.graph import Edge
from weirflow.windows import CountWindows, SessionWindows, TumblingWindows


def test_methods_append_frozen_operator_descriptions() -> None:
    flow = Dataflow("shape")
    key = lambda r: r % 2  # noqa: E731
    windowed = (
        flow.source(IterableSource([1, 2]), timestamp=lambda r: r, name="src")
        .map(lambda r: r + 1, on_error="dead_letter")
        .key_by(key)
        .window(
            SessionWindows(gap=timedelta(seconds=1)), allowed_lateness=timedelta(milliseconds=250)
        )
        .count()
    )
    windowed.sink(CollectSink())
    windowed.late_records().sink(CollectSink(), name="late")
    ops = flow.graph.operators
    assert [o.kind for o in ops] == ["source", "map", "window", "sink", "sink"]
    assert [o.name for o in ops] == ["src", "map_1", "window_2", "sink_3", "late"]
    window = ops[2]
    assert window.inputs == (Edge(1, "key_by", key, "main"),)
    assert window.is_keyed and window.key_fn is key
    assert window.params["allowed_lateness_ms"] == 250
    assert window.params["function"] == "count"
    assert ops[1].on_error == "dead_letter"
    assert ops[4].inputs == (Edge(2, "forward", None, "late"),)
    with pytest.raises(FrozenInstanceError):
        window.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        window.params["function"] = "reduce"  # type: ignore[index]


def test_partitioning_methods_set_the_edge() -> None:
    flow = Dataflow("edges")
    src = flow.source(IterableSource([1]))
    src.rebalance().map(lambda v: v, name="r").sink(CollectSink())
    src.broadcast().map(lambda v: v, name="b").sink(CollectSink())
    src.map(lambda v: v, name="f").dead_letters().sink(CollectSink())
    by_name = {o.name: o for o in flow.graph.operators}
    assert by_name["r"].inputs[0].partitioning == "rebalance"
    assert by_name["b"].inputs[0].partitioning == "broadcast"
    assert by_name["f"].inputs[0].partitioning == "forward"
    assert flow.graph.downstream(by_name["f"].id)[0][1].output == "dead_letter"


def test_builder_refusals() -> None:
    flow = Dataflow("refusals")
    with pytest.raises(ConfigError, match="not a source"):
        flow.source([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="WatermarkStrategy"):
        flow.source(IterableSource([1]), watermarks=timedelta(seconds=1))  # type: ignore[arg-type]
    src = flow.source(IterableSource([1]))
    with pytest.raises(ConfigError, match="not a sink"):
        src.sink([])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="late_records"):
        src.map(lambda v: v).late_records()
    with pytest.raises(ConfigError, match="same Dataflow"):
        src.union(Dataflow("other").source(IterableSource([2])))
    keyed = src.key_by(lambda v: v)
    with pytest.raises(ConfigError, match="window assigner"):
        keyed.window(timedelta(seconds=1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="KeyedProcessFunction"):
        keyed.process(lambda v, ctx: v)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_error"):
        keyed.reduce(lambda a, b: a, on_error="skip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Dataflow("no spaces allowed")


def test_run_refuses_unknown_options() -> None:
    flow = Dataflow("options")
    flow.source(IterableSource([1])).sink(CollectSink())
    with pytest.raises(ConfigError, match="turbo"):
        flow.run(1, turbo=True)


def test_window_functions_record_their_kind_and_policy() -> None:
    flow = Dataflow("functions")
    keyed = flow.source(
        IterableSource([1]),
        timestamp=lambda v: v,
        watermarks=WatermarkStrategy.monotonous_timestamps(),
    ).key_by(lambda v: v)
    policy = RetryPolicy(max_attempts=2)
    keyed.window(TumblingWindows(size=timedelta(seconds=1))).reduce(
        lambda a, b: a, on_error=policy
    ).sink(CollectSink())
    keyed.window(CountWindows(3)).process(lambda k, w, rs: len(rs)).sink(CollectSink())
    windows = [o for o in flow.graph.operators if o.kind == "window"]
    assert [w.params["function"] for w in windows] == ["reduce", "process"]
    assert windows[0].on_error is policy
    assert isinstance(windows[1].params["assigner"], CountWindows)
