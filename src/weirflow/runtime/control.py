"""The control plane's messages between the job coordinator and its workers.

Every message is a small msgspec struct, msgpack-encoded into one frame of an
authenticated :class:`~weirflow.runtime.wire.FramedConnection`. Every message
that concerns a deployment carries its ``attempt`` number; a receiver drops
messages of any other attempt (fencing: a worker of an older attempt can
neither acknowledge a checkpoint nor be told to commit).

Worker → coordinator: :class:`Register`, :class:`Running`,
:class:`Acknowledge`, :class:`Decline`, :class:`TasksFinished`,
:class:`Finished`, :class:`Failed`, :class:`Heartbeat`.
Coordinator → worker: :class:`Welcome`, :class:`Deploy`, :class:`Trigger`, :class:`Complete`,
:class:`Finish`, :class:`Cancel`, :class:`Heartbeat`, :class:`Shutdown`.
Client ↔ coordinator: :class:`Submit`, :class:`StopJob` → :class:`JobEvent`,
:class:`JobDone`; :class:`StatusRequest` → :class:`Status`.
"""

from __future__ import annotations

import msgspec

from weirflow.checkpoint import CheckpointConfig
from weirflow.errors import ConfigError
from weirflow.metrics import AlertCondition, OperatorSample
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.runtime.build import RuntimeOptions
from weirflow.runtime.endpoint import Launch
from weirflow.runtime.restart import RestartStrategy
from weirflow.state import (
    DEFAULT_CACHE_SIZE_BYTES,
    MemoryStateBackend,
    RocksDBStateBackend,
    StateBackend,
)


class Register(msgspec.Struct, tag=True, frozen=True):
    """A worker joins: it offers ``slots`` slots and accepts data connections at ``data_address``.

    Attributes:
        worker_id: unique per worker process (``host:pid:nonce``).
        slots: how many subtask indices it can host.
        host: the host name it runs on (checkpoint storage must be shared across hosts).
        data_address: ``HOST:PORT`` of its data-plane listener.
        pid: its process id (a local launcher ends a worker the coordinator gave up on).
        location: where its launcher placed it beyond the host name (a Ray
            worker: ``ray node <node id> at <node ip>``); empty when started by hand.
    """

    worker_id: str
    slots: int
    host: str
    data_address: str
    pid: int
    location: str = ""


class Welcome(msgspec.Struct, tag=True, frozen=True):
    """The coordinator accepted a worker.

    Attributes:
        heartbeat_interval_ms: how often each side sends a heartbeat.
        heartbeat_timeout_ms: silence after which each side gives the other up.
    """

    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int


class StateBackendSpec(msgspec.Struct, frozen=True):
    """A job's state backend as it travels to the workers.

    Attributes:
        kind: ``memory`` or ``rocksdb``.
        path: RocksDB's folder on each worker's host, or ``None`` (temporary folders).
        incremental: RocksDB checkpoints upload only new files.
        cache_size_bytes: RocksDB's write-back cache per subtask.
    """

    kind: str = "memory"
    path: str | None = None
    incremental: bool = True
    cache_size_bytes: int = DEFAULT_CACHE_SIZE_BYTES

    @classmethod
    def of(cls, backend: StateBackend) -> StateBackendSpec:
        """Describe ``backend``.

        Raises:
            ConfigError: a backend other than the memory and RocksDB ones.
        """
        if isinstance(backend, MemoryStateBackend):
            return cls()
        if isinstance(backend, RocksDBStateBackend):
            path = str(backend.path.resolve()) if backend.path is not None else None
            return cls("rocksdb", path, backend.incremental, backend.cache_size_bytes)
        raise ConfigError(f"state backend {backend!r} cannot be sent to workers")

    def build(self) -> StateBackend:
        """Return the backend this spec describes."""
        if self.kind == "rocksdb":
            return RocksDBStateBackend(
                self.path, incremental=self.incremental, cache_size_bytes=self.cache_size_bytes
            )
        return MemoryStateBackend()


class RuntimeSpec(msgspec.Struct, frozen=True):
    """A job's :class:`~weirflow.runtime.build.RuntimeOptions` as they travel from the
    client to the coordinator and on to every worker.

    Attributes:
        source_batch_size: records a source subtask reads per step.
        buffer_size: records per buffer.
        channel_capacity: buffers per channel (its credit).
        state_backend: where the subtasks keep keyed state and timers.
        startup_ramp_s: after a restore, seconds over which sources ramp up
            their read rate (``None``: at once).
        ramp_start_rate: records/s a source subtask's ramp starts from.
        tracing: continue trace contexts of record headers, spans per buffer
            and operator (the worker configures OpenTelemetry from ``OTEL_*``).
    """

    source_batch_size: int
    buffer_size: int
    channel_capacity: int
    state_backend: StateBackendSpec
    startup_ramp_s: float | None
    ramp_start_rate: int
    tracing: bool

    @classmethod
    def of(cls, options: RuntimeOptions) -> RuntimeSpec:
        """Describe ``options``.

        Raises:
            ConfigError: a state backend other than the memory and RocksDB ones.
        """
        return cls(
            source_batch_size=options.source_batch_size,
            buffer_size=options.buffer_size,
            channel_capacity=options.channel_capacity,
            state_backend=StateBackendSpec.of(options.state_backend),
            startup_ramp_s=options.startup_ramp_s,
            ramp_start_rate=options.ramp_start_rate,
            tracing=options.tracing,
        )

    def build(self) -> RuntimeOptions:
        """Return the options this spec describes (with a new state backend object)."""
        return RuntimeOptions(
            source_batch_size=self.source_batch_size,
            buffer_size=self.buffer_size,
            channel_capacity=self.channel_capacity,
            state_backend=self.state_backend.build(),
            startup_ramp_s=self.startup_ramp_s,
            ramp_start_rate=self.ramp_start_rate,
            tracing=self.tracing,
        )


class Deploy(msgspec.Struct, tag=True, frozen=True):
    """Run ``subtasks`` of every chain of the job, as attempt ``attempt``.

    Attributes:
        attempt: the deployment's attempt number (fencing token).
        job: the job spec, ``JOB.py[:NAME]``, importable on the worker.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        subtasks: the subtask indices (slots) this worker hosts.
        owners: subtask index → worker id, for every subtask.
        peers: worker id → data address, for every worker of the attempt.
        checkpoint_dir: checkpoint storage URL, or ``None`` without checkpoints.
        mode: ``exactly_once``, ``at_least_once`` or ``at_most_once``.
        restore: URL of the checkpoint to restore, or ``None`` for a fresh start.
        allow_duplicates_after_fallback: restore even when a sink committed
            output of a newer checkpoint (see ``CheckpointConfig``).
        allow_non_restored_state: leave state of operators the job lacks
            behind (see ``CheckpointConfig``).
        storage_probe: with workers on several hosts and a local checkpoint
            folder, the token the coordinator wrote to :data:`SHARED_PROBE`
            in the job's folder; a worker that does not find it there fails
            the attempt (the folder is not shared).
        unaligned_after_ms: when checkpoint barriers may overtake records
            (``CheckpointConfig.unaligned_after_ms``); ``None``: aligned.
        options: how the subtasks run (sizes, state backend, ramp, tracing).
    """

    attempt: int
    job: str
    parallelism: int
    max_parallelism: int
    subtasks: list[int]
    owners: dict[int, str]
    peers: dict[str, str]
    checkpoint_dir: str | None
    mode: str
    restore: str | None
    allow_duplicates_after_fallback: bool = False
    storage_probe: str | None = None
    unaligned_after_ms: int | None = None
    allow_non_restored_state: bool = False
    options: RuntimeSpec = msgspec.field(default_factory=lambda: RuntimeSpec.of(RuntimeOptions()))


SHARED_PROBE = "_shared-probe"


class Running(msgspec.Struct, tag=True, frozen=True):
    """The worker's tasks are built, restored and connected; they run now."""

    attempt: int


class Trigger(msgspec.Struct, tag=True, frozen=True):
    """Start checkpoint ``checkpoint_id``: sources inject the barrier; finished tasks snapshot.

    Attributes:
        stop: the stop checkpoint: sources emit nothing after its barrier.
        savepoint: a savepoint's checkpoint: aligned, whatever the job's mode.
    """

    attempt: int
    checkpoint_id: int
    timestamp_ms: int
    stop: bool = False
    savepoint: bool = False


class Acknowledge(msgspec.Struct, tag=True, frozen=True):
    """A task's snapshot of a checkpoint: its state files are written.

    Attributes:
        snapshot: the pickled :class:`~weirflow.checkpoint.TaskSnapshot`
            (handles and inline metadata; the connection is authenticated).
    """

    attempt: int
    checkpoint_id: int
    snapshot: bytes


class Decline(msgspec.Struct, tag=True, frozen=True):
    """A task could not snapshot or write a checkpoint."""

    attempt: int
    checkpoint_id: int
    task: str
    reason: str


class Complete(msgspec.Struct, tag=True, frozen=True):
    """Checkpoint ``checkpoint_id`` completed (its manifest is written): sinks may commit."""

    attempt: int
    checkpoint_id: int


class TasksFinished(msgspec.Struct, tag=True, frozen=True):
    """Every task of the worker reached the end of its input."""

    attempt: int


class Finish(msgspec.Struct, tag=True, frozen=True):
    """The job is over: close the tasks and report their counts."""

    attempt: int


class Finished(msgspec.Struct, tag=True, frozen=True):
    """The worker closed its tasks.

    Attributes:
        counts: operator name → ``[in, out, filtered, late, dead_lettered]``
            summed over this worker's subtasks.
    """

    attempt: int
    counts: dict[str, list[int]]


class Failed(msgspec.Struct, tag=True, frozen=True):
    """A task of the worker failed; the attempt is over.

    Attributes:
        retriable: whether another attempt may succeed (``False``: a user
            function failed under ``on_error="fail"``, a bad configuration).
    """

    attempt: int
    message: str
    retriable: bool


class Cancel(msgspec.Struct, tag=True, frozen=True):
    """Drop every task of ``attempt`` at once; nothing of it may commit any more."""

    attempt: int


class ConnectorReport(msgspec.Struct, frozen=True):
    """A connector subtask's report on its external system (see ``metrics.ConnectorStats``).

    Attributes:
        breaker: ``closed``, ``half-open`` or ``open``.
        retries: error class → calls retried.
        rows_written: rows committed.
        rejected: the system's error code → rows refused for their content.
        transactions: transactions ended.
        transaction_s: seconds spent ending them.
    """

    breaker: str
    retries: dict[str, int]
    rows_written: int
    rejected: dict[str, int]
    transactions: int
    transaction_s: float


class Heartbeat(msgspec.Struct, tag=True, frozen=True):
    """Liveness, every heartbeat interval, both ways.

    Attributes:
        counts: from a worker, its metrics sample: operator name → subtask →
            ``[in, out, filtered, late, dead_lettered]`` of the subtasks it runs.
        connectors: from a worker, operator name → subtask → the report of
            each connector of an external system it runs (read on the heartbeat
            thread, so it stays current while a sink waits out an outage).
        split_lag: from a worker, ``"<operator>/<split>"`` → records its source
            subtasks have not read yet (sampled on its scheduler thread).
    """

    attempt: int
    counts: dict[str, dict[int, list[int]]] = {}
    connectors: dict[str, dict[int, ConnectorReport]] = {}
    split_lag: dict[str, int] = {}


class Shutdown(msgspec.Struct, tag=True, frozen=True):
    """The coordinator ends: the worker exits (status 0)."""

    reason: str


class AlertRules(msgspec.Struct, frozen=True):
    """A submitted job's ``--alert`` conditions, evaluated by the coordinator it runs under.

    Attributes:
        conditions: what to evaluate (each fires while its signal is above its threshold).
        webhook: URL the coordinator POSTs each firing/resolved to, or ``None`` (log only).
        every_ms: time between evaluations (ms).
    """

    conditions: list[AlertCondition]
    webhook: str | None
    every_ms: int


class Submit(msgspec.Struct, tag=True, frozen=True):
    """A client (``weirflow run --coordinator``) submits a job.

    Attributes:
        job: ``JOB.py[:NAME]``, importable on the coordinator and every worker.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        checkpoint: checkpoint configuration, or ``None``.
        guarantee: the delivery guarantee.
        restore: ``None``, ``latest``, ``latest-or-fresh`` or a checkpoint path.
        restart: the restart strategy.
        launch: how the client was launched (``weirflow rescale`` submits again with its
            arguments), ``None`` from a client that does not say.
        options: how the job's subtasks run (state backend and its folder, tracing, ramp).
        alerts: conditions the coordinator evaluates on its view of the job, or ``None``.
        autoscale: the coordinator rescales the job on its sources' lag within these
            bounds (a stop checkpoint, then a run at the new parallelism), or ``None``.
    """

    job: str
    parallelism: int
    max_parallelism: int
    checkpoint: CheckpointConfig | None
    guarantee: str
    restore: str | None
    restart: RestartStrategy
    launch: Launch | None = None
    options: RuntimeSpec = msgspec.field(default_factory=lambda: RuntimeSpec.of(RuntimeOptions()))
    alerts: AlertRules | None = None
    autoscale: AutoscaleConfig | None = None


class StopJob(msgspec.Struct, tag=True, frozen=True):
    """The client asks the running job to stop (a stop checkpoint, then the end).

    Attributes:
        savepoint: make the stop checkpoint a savepoint in the job's default
            savepoint folder (for a job with checkpoints; others stop as usual).
    """

    savepoint: bool = False


class JobEvent(msgspec.Struct, tag=True, frozen=True):
    """A progress line for the client (an attempt started or failed, a checkpoint completed)."""

    text: str


class JobDone(msgspec.Struct, tag=True, frozen=True):
    """The submitted job ended.

    Attributes:
        ok: whether it finished (or stopped) cleanly.
        job: the job's name.
        error: the failure, when not ``ok``.
        retriable: whether the failure might pass on another run.
        counts: operator name → ``[in, out, filtered, late, dead_lettered]``.
        checkpoints_completed: checkpoints completed during the run.
        restarts: attempts restarted.
        duration_ms: wall time of the run.
        stopped: whether it was stopped (by the client, or with a savepoint through its
            control endpoint) rather than finished.
    """

    ok: bool
    job: str = ""
    error: str = ""
    retriable: bool = False
    counts: dict[str, list[int]] = {}
    checkpoints_completed: int = 0
    restarts: int = 0
    duration_ms: int = 0
    stopped: bool = False


class StatusRequest(msgspec.Struct, tag=True, frozen=True):
    """``weirflow status`` asks what runs where."""


class WorkerInfo(msgspec.Struct, frozen=True):
    """One worker in a :class:`Status`."""

    worker_id: str
    host: str
    slots: int
    status: str
    subtasks: list[int]
    location: str = ""


class Status(msgspec.Struct, tag=True, frozen=True):
    """The coordinator's answer to :class:`StatusRequest`.

    Attributes:
        operators: per operator subtask, its counts in the latest heartbeat of the
            worker running it, in job order (rates 0: one answer has no interval).
    """

    job: str | None
    parallelism: int
    attempt: int
    restarts: int
    last_completed_checkpoint: int | None
    workers: list[WorkerInfo]
    operators: tuple[OperatorSample, ...] = ()


AttemptMessage = (
    Deploy
    | Running
    | Trigger
    | Acknowledge
    | Decline
    | Complete
    | TasksFinished
    | Finish
    | Finished
    | Failed
    | Cancel
    | Heartbeat
)

Message = (
    Register
    | Welcome
    | AttemptMessage
    | Shutdown
    | Submit
    | StopJob
    | JobEvent
    | JobDone
    | StatusRequest
    | Status
)


def of_other_attempt(message: object, attempt: int) -> bool:
    """Whether ``message`` belongs to a deployment other than ``attempt`` (to be dropped)."""
    return isinstance(message, AttemptMessage) and message.attempt != attempt


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    """Encode a control message into one frame's payload."""
    return _encoder.encode(message)


def decode_message(payload: bytes) -> Message:
    """Decode one frame's payload.

    Raises:
        msgspec.DecodeError: the payload is not a known control message.
    """
    return _decoder.decode(payload)
