"""The NYC flights job, runnable with ``weirflow run examples/flights/job.py``.

Ingest the data first (``weirflow demo flights`` does it, or see the README);
``WEIRFLOW_LOG_DIR`` names the event log (default ``./weirflow-data/log``).
The job's code is in :mod:`weirflow.demos.flights.job`.
"""

import os

from weirflow.demos.flights.job import build_flow, create_output_topics

LOG_DIR = os.environ.get("WEIRFLOW_LOG_DIR", "weirflow-data/log")
create_output_topics(LOG_DIR)
flow = build_flow(LOG_DIR, LOG_DIR)
