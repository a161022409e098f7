"""Every metric name weirflow exports, in one place.

Names follow Prometheus conventions: a ``weirflow_`` prefix, base units in
the name (``_seconds``, ``_bytes``, ``_records``), ``_total`` on counters.
Per-subtask metrics carry the labels ``job``, ``operator``, ``subtask``;
task-level metrics (a task is an operator chain) carry ``job``, ``task``,
``subtask`` where ``task`` is the chain's head operator; split metrics carry
``job``, ``operator``, ``split``; job-wide metrics carry ``job`` only.
"""

from __future__ import annotations

OPERATOR_LABELS = ("job", "operator", "subtask")
TASK_LABELS = ("job", "task", "subtask")
SPLIT_LABELS = ("job", "operator", "split")
JOB_LABELS = ("job",)
DEAD_LETTER_LABELS = ("job", "operator", "subtask", "error_type")

# records, per operator subtask (counters) and their rates (gauges, records/s)
RECORDS_IN = "weirflow_records_in"
RECORDS_OUT = "weirflow_records_out"
RECORDS_FILTERED = "weirflow_records_filtered"
RECORDS_LATE = "weirflow_records_late"
RECORDS_DEAD_LETTERED = "weirflow_records_dead_lettered"
DEAD_LETTERS_BY_ERROR = "weirflow_dead_letters_by_error"
RECORDS_IN_RATE = "weirflow_records_in_per_second"
RECORDS_OUT_RATE = "weirflow_records_out_per_second"

# external connectors, per operator subtask (a sink behind a circuit breaker)
CONNECTOR_CODE_LABELS = ("job", "operator", "subtask", "code")
CONNECTOR_ERROR_LABELS = ("job", "operator", "subtask", "error_class")
CONNECTOR_BREAKER_STATE = "weirflow_connector_breaker_state"
CONNECTOR_RETRIES = "weirflow_connector_retries"
SINK_ROWS_WRITTEN = "weirflow_sink_rows_written"
SINK_ROWS_REJECTED = "weirflow_sink_rows_rejected"
SINK_TRANSACTIONS = "weirflow_sink_transactions"
SINK_TRANSACTION_TIME = "weirflow_sink_transaction_seconds"

# backpressure and buffers, per task
BACKPRESSURE_RATIO = "weirflow_task_backpressured_ratio"
INPUT_BUFFER_USAGE = "weirflow_task_input_buffer_usage_ratio"
OUTPUT_BUFFER_USAGE = "weirflow_task_output_buffer_usage_ratio"

# event time
WATERMARK = "weirflow_task_watermark_milliseconds"
WATERMARK_LAG = "weirflow_task_watermark_lag_milliseconds"
SPLIT_LAG = "weirflow_source_split_lag_records"

# checkpoints, per job
CHECKPOINTS_TRIGGERED = "weirflow_checkpoints_triggered"
CHECKPOINTS_COMPLETED = "weirflow_checkpoints_completed"
CHECKPOINTS_FAILED = "weirflow_checkpoints_failed"
CHECKPOINT_DURATION = "weirflow_checkpoint_duration_seconds"
CHECKPOINT_DURATION_P50 = "weirflow_checkpoint_duration_p50_seconds"
CHECKPOINT_DURATION_P99 = "weirflow_checkpoint_duration_p99_seconds"
CHECKPOINT_ALIGNMENT = "weirflow_checkpoint_alignment_seconds"
CHECKPOINT_SIZE_FULL = "weirflow_checkpoint_full_size_bytes"
CHECKPOINT_SIZE_INCREMENTAL = "weirflow_checkpoint_incremental_size_bytes"
CHECKPOINT_LAST_COMPLETED_ID = "weirflow_checkpoint_last_completed_id"
CHECKPOINT_AGE = "weirflow_checkpoint_last_completed_age_seconds"

# failover, per job
RESTARTS = "weirflow_restarts"
RECOVERY_TIME = "weirflow_recovery_time_seconds"

# workers of a job coordinator; records per operator subtask also carry the worker
WORKER_LABELS = ("job", "worker", "host")
CLUSTER_OPERATOR_LABELS = ("job", "operator", "subtask", "worker")
WORKER_UP = "weirflow_worker_up"
WORKER_SLOTS = "weirflow_worker_slots"
WORKER_SUBTASKS = "weirflow_worker_subtasks"

# end-to-end latency, per job (sampled)
END_TO_END_LATENCY = "weirflow_end_to_end_latency_seconds"

# circuit breakers of sinks to external systems, per job and connector: 1 = open, else 0
CIRCUIT_BREAKER_STATE = "weirflow_circuit_breaker_state"

# lag-driven rescales, per job and direction (up, down)
AUTOSCALE_LABELS = ("job", "direction")
AUTOSCALE_DECISIONS = "weirflow_autoscale_decisions"

# environment variables the supervisor hands to each worker
ENV_RESTARTS = "WEIRFLOW_SUPERVISOR_RESTARTS"
ENV_RECOVERY_MS = "WEIRFLOW_SUPERVISOR_RECOVERY_MS"
ENV_AUTOSCALE_FILE = "WEIRFLOW_AUTOSCALE_FILE"
ENV_AUTOSCALE_LAST_MS = "WEIRFLOW_AUTOSCALE_LAST_MS"
ENV_AUTOSCALE_UP = "WEIRFLOW_AUTOSCALE_UP"
ENV_AUTOSCALE_DOWN = "WEIRFLOW_AUTOSCALE_DOWN"
