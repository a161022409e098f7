"""A Nexmark query as a job ``weirflow run --workers N`` can load.

``$WF_SCALING_QUERY`` names the query (``q0``, ``q4``, …, see
``benchmarks/nexmark/queries.py``), ``$WF_SCALING_EVENTS`` the number of
events and ``$WF_SCALING_SPLITS`` the source splits (one per source
subtask). Results go, as JSON, to topic ``results`` of the event log
``$WF_SCALING_OUTPUT`` through an exactly-once sink.
"""

import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nexmark"))

import queries

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSink, NexmarkSource

QUERY = os.environ["WF_SCALING_QUERY"]

flow = Dataflow(f"scaling_nexmark_{QUERY}")
events = flow.source(
    NexmarkSource(
        int(os.environ["WF_SCALING_EVENTS"]), splits=int(os.environ["WF_SCALING_SPLITS"])
    ),
    watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=4)),
    name="nexmark",
)
queries.QUERIES[QUERY](events).sink(
    EventLogSink(os.environ["WF_SCALING_OUTPUT"], "results"), name="results"
)
