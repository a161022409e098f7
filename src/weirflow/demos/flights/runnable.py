"""The flights job as a module ``weirflow run`` can load.

Reads ``WEIRFLOW_LOG_DIR`` (input log, default ``./weirflow-data/log``) and
``WEIRFLOW_FLIGHTS_OUTPUT`` (output log, default the input log).
"""

import os

from weirflow.demos.flights.job import build_flow, create_output_topics

INPUT_LOG = os.environ.get("WEIRFLOW_LOG_DIR", "weirflow-data/log")
OUTPUT_LOG = os.environ.get("WEIRFLOW_FLIGHTS_OUTPUT", INPUT_LOG)

create_output_topics(OUTPUT_LOG)
flow = build_flow(INPUT_LOG, OUTPUT_LOG)
