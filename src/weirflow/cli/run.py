"""``weirflow run``: run a job in a worker process under a supervisor.

The supervisor starts the worker (this same command with ``--worker``) and
waits. When the worker dies — any signal, SIGKILL included — or exits with a
job failure, the supervisor asks the restart strategy and starts a new
worker that restores from the latest completed checkpoint. SIGTERM or
Ctrl-C is forwarded to the worker, which takes a final checkpoint, lets the
sinks commit, and exits 0. The worker dies with the supervisor
(``PR_SET_PDEATHSIG``), so no orphan keeps writing.

Observability: the worker samples the job every 500 ms (never per record)
and, on request, serves Prometheus metrics (``--metrics-port``) and the
dashboard (``--ui-port``); on a terminal it shows a live progress line, and
``--log-format json`` turns every log line and the progress into JSON. The
supervisor tells each worker how many restarts came before it and how long
recovery took (environment variables), so those metrics survive worker deaths.
``--autoscale`` rescales on source lag and ``--alert`` evaluates alert
conditions (:mod:`weirflow.cli.run_autoscale`, :mod:`weirflow.metrics.watch`)
in the worker, or with ``--workers`` or ``--ray`` in the coordinator, on its view of
the cluster.

Exit status: 0 finished or stopped cleanly; 1 the job failed and the
restart strategy gave up, or it failed with an error that recurs on every
attempt (:func:`weirflow.errors.is_retriable`), which is not restarted; 2 bad
arguments or configuration (also an unusable checkpoint storage, found
before the first record). Between worker and supervisor, 3 says "failed,
not retriable".
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from weirflow.api import load_dataflow
from weirflow.checkpoint import (
    KEY_ENV,
    CheckpointConfig,
    CheckpointStorage,
    NoCheckpointError,
)
from weirflow.cli.app import app
from weirflow.cli.cluster import read_secret, run_on_workers
from weirflow.cli.durations import parse_duration
from weirflow.cli.run_autoscale import parse_autoscale
from weirflow.cli.run_options import (
    Guarantee,
    LogFormat,
    StateBackendKind,
    Strategy,
    alert_watch,
    build_strategy,
    check_fresh_start,
    check_watch_placement,
    checkpoint_key_env,
    config_message,
    restore_option,
    state_backend_option,
)
from weirflow.cli.run_ray import RayPlacement, ray_cluster_option, run_on_ray_cluster
from weirflow.cli.run_surfaces import alert_rules, coordinator_watch, print_summary
from weirflow.cli.run_worker import PrintingListener, configure_logging, run_worker
from weirflow.cli.savepoints import (
    job_endpoint,
    launch_env,
    stop_with_savepoint_on_signal,
    this_launch,
)
from weirflow.cli.submit import submission, submit_job
from weirflow.cli.supervisor import EXIT_CONFIG, EXIT_FAILED, EXIT_NOT_RETRIABLE, supervise
from weirflow.errors import ConfigError, WeirflowError, is_retriable
from weirflow.metrics import DEFAULT_HOST, configure_from_env
from weirflow.runtime import RuntimeOptions
from weirflow.runtime.local_cluster import resolve_workers

_MAX_RESTARTS = "Restarts allowed (failure-rate: failures per interval)."
# also in weirflow.web.app, which needs the web extra: the CLI checks before importing it
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


@app.command("run")
def run(
    job: Annotated[str, typer.Argument(help="JOB.py, or JOB.py:NAME to pick one Dataflow.")],
    parallelism: Annotated[int, typer.Option(min=1, help="Subtasks per operator.")] = 1,
    checkpoint_dir: Annotated[
        str, typer.Option(help="Checkpoint storage: a folder or fsspec URL.")
    ] = "weirflow-data/checkpoints",
    checkpoint_interval: Annotated[
        str, typer.Option(help="Time between checkpoints, e.g. 500ms, 1s.")
    ] = "1s",
    checkpoint_key_file: Annotated[
        str | None,
        typer.Option(
            help="Key file (hex, mode 0600) that signs checkpoints (default: "
            f"${KEY_ENV}, else one generated next to the checkpoint folder)."
        ),
    ] = None,
    guarantee: Annotated[Guarantee, typer.Option(help="Delivery guarantee.")] = (
        Guarantee.exactly_once
    ),
    unaligned: Annotated[
        bool,
        typer.Option(
            help="Unaligned checkpoints: barriers overtake buffered records, which are "
            "checkpointed with the state (completes under backpressure; exactly-once only)."
        ),
    ] = False,
    alignment_timeout: Annotated[
        str | None,
        typer.Option(
            help="With --unaligned: start aligned, go unaligned once a checkpoint took this "
            "long, e.g. 200ms."
        ),
    ] = None,
    restore: Annotated[
        str | None,
        typer.Option(
            help="latest, latest-or-fresh, none (fresh over earlier checkpoints), or a "
            "checkpoint/savepoint path. Without it a job with checkpoints is refused."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Same as --restore none.")] = False,
    allow_duplicates_after_fallback: Annotated[
        bool,
        typer.Option(
            help="Restore an older checkpoint than the sinks committed (the newer ones are "
            "unusable), writing their output again."
        ),
    ] = False,
    allow_non_restored_state: Annotated[
        bool,
        typer.Option(help="Restore a savepoint holding state of removed operators, leaving it."),
    ] = False,
    restart_strategy: Annotated[Strategy, typer.Option(help="What to do when the worker dies.")] = (
        Strategy.fixed_delay
    ),
    max_restarts: Annotated[
        int, typer.Option(min=0, help="Restarts (or failures per interval).")
    ] = 10,
    restart_delay: Annotated[
        str, typer.Option(help="Wait before a restart (initial wait).")
    ] = "1s",
    max_restart_delay: Annotated[str, typer.Option(help="Cap for exponential backoff.")] = "1m",
    failure_interval: Annotated[
        str, typer.Option(help="Window of the failure-rate strategy.")
    ] = "1m",
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics.")] = DEFAULT_HOST,
    ui_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve the dashboard on this port.")
    ] = None,
    ui_host: Annotated[str, typer.Option(help="Address of the dashboard.")] = DEFAULT_HOST,
    ui_token: Annotated[
        str | None,
        typer.Option(
            envvar="WEIRFLOW_UI_TOKEN",
            help="Token the dashboard requires (needed when --ui-host is not loopback).",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option(help="text (with a live progress line) or json.")
    ] = (LogFormat.text),
    workers: Annotated[
        str, typer.Option(help="Worker processes on this machine: a count, or auto (one per core).")
    ] = "1",
    coordinator: Annotated[
        str | None, typer.Option(help="Submit to a running `weirflow coordinator` at HOST:PORT.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the job's secret (with --coordinator).")
    ] = None,
    heartbeat_timeout: Annotated[
        str, typer.Option(help="Silence after which a worker is given up (with --workers).")
    ] = "10s",
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the --workers as actors of a Ray cluster: auto, HOST:PORT of its head, "
            "ray://HOST:PORT, or local (a Ray instance started here). Needs weirflow[ray]."
        ),
    ] = None,
    ray_placement: Annotated[
        RayPlacement, typer.Option(help="Spread the worker actors over nodes, or pack them.")
    ] = RayPlacement.spread,
    worker_wait: Annotated[
        str, typer.Option(help="How long to wait for Ray to place (or replace) a worker.")
    ] = "60s",
    ray_runtime_env_json: Annotated[
        str | None,
        typer.Option(
            help='More of the workers\' Ray runtime_env as JSON, e.g. {"env_vars": {...}, '
            '"pip": [...]} (working_dir: the job file\'s folder).'
        ),
    ] = None,
    ray_detached: Annotated[
        bool,
        typer.Option(
            help="Run the coordinator as a detached Ray actor named after the job: the job "
            "outlives this command, which returns once the job runs (unless --ray-wait)."
        ),
    ] = False,
    ray_wait: Annotated[
        bool, typer.Option(help="With --ray-detached: wait for the job's end and its counts.")
    ] = False,
    alert: Annotated[
        list[str] | None,
        typer.Option(
            help="Alert when NAME>VALUE holds (repeatable): lag>5m, lag_records>N, "
            "dead_letters>N, checkpoint_age>1m, checkpoint_failures>N, restarts>N, "
            "watermark_stalled>5m; logged, and posted to --alert-webhook."
        ),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(
            envvar="WEIRFLOW_ALERT_WEBHOOK",
            help="URL to POST each alert's firing/resolved to (JSON).",
        ),
    ] = None,
    alert_every: Annotated[str, typer.Option(help="Time between alert evaluations.")] = "5s",
    autoscale: Annotated[
        str | None,
        typer.Option(
            help="Rescale on source lag: min=1,max=N,target-lag=30s[,cooldown=5m][,sustain=1m] "
            "(stop with a final checkpoint, restore at the new parallelism)."
        ),
    ] = None,
    state_backend: Annotated[
        StateBackendKind, typer.Option(help="Where keyed state lives: memory or rocksdb (disk).")
    ] = StateBackendKind.memory,
    state_dir: Annotated[
        str | None,
        typer.Option(help="RocksDB's local folder (default weirflow-data/state)."),
    ] = None,
    startup_ramp: Annotated[
        str | None,
        typer.Option(
            help="After a restart, ramp each source's read rate up to full speed over this "
            "long, e.g. 2m (doubling every tenth), so recovering systems get no burst."
        ),
    ] = None,
    ramp_start_rate: Annotated[
        int, typer.Option(min=1, help="Records/s per source subtask a --startup-ramp starts at.")
    ] = 1000,
    otel: Annotated[
        bool,
        typer.Option(
            help="Trace records: continue the W3C trace context of record headers, one span "
            "per batch and operator, sampled and exported as the OTEL_* environment says "
            "(pip install 'weirflow[otel]')."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    worker: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run a job under a supervisor that restarts it from its latest checkpoint."""
    configure_logging(log_format)
    try:
        interval = parse_duration(checkpoint_interval)
        restore = restore_option(restore, fresh)
        backend = state_backend_option(state_backend, state_dir)
        config = (
            None
            if guarantee is Guarantee.at_most_once
            else CheckpointConfig(
                storage=checkpoint_dir,
                interval=interval,
                mode=guarantee.value,
                allow_duplicates_after_fallback=allow_duplicates_after_fallback,
                allow_non_restored_state=allow_non_restored_state,
                unaligned=unaligned,
                alignment_timeout=(
                    parse_duration(alignment_timeout) if alignment_timeout is not None else None
                ),
            )
        )
        if ui_port is not None and any(find_spec(m) is None for m in ("starlette", "uvicorn")):
            raise ConfigError(
                "--ui-port needs the dashboard's packages: pip install 'weirflow[web]'"
            )
        if ui_port is not None and not ui_token and ui_host not in _LOOPBACK:
            raise ConfigError(
                f"--ui-host {ui_host} exposes the dashboard beyond this machine: "
                "give it a --ui-token"
            )
        alerts = alert_watch(alert or [], alert_webhook)
        scaling = parse_autoscale(autoscale, parallelism) if autoscale is not None else None
        if scaling is not None and config is None:
            raise ConfigError("--autoscale rescales from a final checkpoint: not with at_most_once")
        surfaces = {
            "alerts": alerts,
            "alert_webhook": alert_webhook,
            "alert_every": parse_duration(alert_every),
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
            "ui_port": ui_port,
            "ui_host": ui_host,
            "ui_token": ui_token,
            "log_format": log_format,
        }
        runtime = RuntimeOptions(
            startup_ramp_s=(
                parse_duration(startup_ramp).total_seconds() if startup_ramp is not None else None
            ),
            ramp_start_rate=ramp_start_rate,
            state_backend=backend,
            tracing=otel,
        )
        if otel:
            configure_from_env()
        if worker:
            raise typer.Exit(
                run_worker(job, parallelism, config, guarantee, restore, surfaces, scaling, runtime)
            )
        strategy = build_strategy(
            restart_strategy,
            max_restarts,
            parse_duration(restart_delay),
            parse_duration(max_restart_delay),
            parse_duration(failure_interval),
        )
        elsewhere = (
            coordinator is not None or ray is not None or resolve_workers(workers, parallelism) > 1
        )
        check_watch_placement(alerts, elsewhere)
        if (ray_detached and ray is None) or (ray_wait and not ray_detached):
            raise ConfigError("--ray-detached goes with --ray ADDRESS, --ray-wait with both")
        if ray_detached and (metrics_port is not None or ui_port is not None):
            raise ConfigError(
                "--metrics-port and --ui-port are served by a coordinator in this process: "
                "not with --ray-detached"
            )
        stop = threading.Event()
        if config is not None and elsewhere:
            # workers find the key as this process does: through the environment they inherit
            os.environ.update(
                checkpoint_key_env(checkpoint_dir, load_dataflow(job).name, checkpoint_key_file)
            )
        if coordinator is not None:
            submit = submission(
                job,
                parallelism,
                config,
                guarantee,
                restore,
                strategy,
                runtime,
                {**surfaces, "autoscale": scaling},
            )
            result = submit_job(coordinator, read_secret(token_file), submit, stop)
            print_summary(result, log_format, stop.is_set())
            raise typer.Exit(0)
        processes = resolve_workers(workers, parallelism)
        spec_args = {
            "parallelism": parallelism,
            "checkpoint": config,
            "guarantee": guarantee.value,
            "restore": restore,
            "restart": strategy,
            "options": runtime,
        }
        if ray is not None:
            # a detached job's coordinator is reached through Ray (weirflow status --ray)
            savepoints = (
                None if ray_detached else stop_with_savepoint_on_signal(stop, config is not None)
            )
            flow = load_dataflow(job)
            endpoint = (
                job_endpoint(savepoints, config, flow.name) if savepoints is not None else None
            )
            try:
                result = run_on_ray_cluster(
                    job,
                    ray_cluster_option(
                        ray,
                        processes,
                        ray_placement,
                        parse_duration(worker_wait),
                        ray_runtime_env_json,
                        ray_detached,
                    ),
                    spec_args,
                    parse_duration(heartbeat_timeout).total_seconds(),
                    PrintingListener(),
                    stop,
                    (metrics_port, metrics_host),
                    wait=ray_wait or not ray_detached,
                    watch=coordinator_watch(flow.graph, parallelism, surfaces, endpoint),
                    savepoints=savepoints,
                    autoscale=scaling,
                    alerts=alert_rules(surfaces),
                )
            finally:
                if endpoint is not None:
                    endpoint.close()
            if result is not None:
                stopped = stop.is_set() or (savepoints is not None and savepoints.stop_submitted)
                print_summary(result, log_format, stopped)
            raise typer.Exit(0)
        if processes > 1:
            savepoints = stop_with_savepoint_on_signal(stop, config is not None)
            endpoint = job_endpoint(savepoints, config, load_dataflow(job).name)
            try:
                result = run_on_workers(
                    job,
                    processes,
                    spec_args,
                    parse_duration(heartbeat_timeout).total_seconds(),
                    PrintingListener(),
                    stop,
                    (metrics_port, metrics_host),
                    savepoints,
                    coordinator_watch(load_dataflow(job).graph, parallelism, surfaces, endpoint),
                    scaling,
                )
            finally:
                if endpoint is not None:
                    endpoint.close()
            print_summary(result, log_format, stop.is_set() or savepoints.stop_submitted)
            raise typer.Exit(0)
        flow = load_dataflow(job)
        storage = CheckpointStorage(checkpoint_dir, flow.name) if config else None
        if storage is not None:
            storage.check_writable()
        if storage is not None and restore is None:
            check_fresh_start(storage)
        argv = (
            [
                job,
                f"--parallelism={parallelism}",
                f"--checkpoint-dir={checkpoint_dir}",
                f"--checkpoint-interval={checkpoint_interval}",
                f"--guarantee={guarantee.value}",
                f"--metrics-host={metrics_host}",
                f"--ui-host={ui_host}",
                f"--log-format={log_format.value}",
                f"--state-backend={state_backend.value}",
                *([f"--state-dir={state_dir}"] if state_dir is not None else []),
                *([f"--metrics-port={metrics_port}"] if metrics_port is not None else []),
                *([f"--ui-port={ui_port}"] if ui_port is not None else []),
                *[f"--alert={a}" for a in alert or []],
                f"--alert-every={alert_every}",
                *([f"--autoscale={autoscale}"] if autoscale is not None else []),
                *([f"--startup-ramp={startup_ramp}"] if startup_ramp is not None else []),
                f"--ramp-start-rate={ramp_start_rate}",
            ]
            + (["--debug"] if debug else [])
            + (["--otel"] if otel else [])
        )
        if allow_duplicates_after_fallback:
            argv.append("--allow-duplicates-after-fallback")
        if unaligned:
            argv.append("--unaligned")
        if allow_non_restored_state:
            argv.append("--allow-non-restored-state")
        if alignment_timeout is not None:
            argv.append(f"--alignment-timeout={alignment_timeout}")
        # secrets go to the worker in its environment, not in its (world-readable) arguments
        worker_env = {"WEIRFLOW_UI_TOKEN": ui_token} if ui_token else {}
        if alert_webhook is not None:
            # a webhook URL often embeds its own token
            worker_env["WEIRFLOW_ALERT_WEBHOOK"] = alert_webhook
        if storage is not None and restore == "latest" and not storage.completed_checkpoints():
            # before a key file is generated for a run that cannot start
            raise NoCheckpointError(flow.name, storage.root_url, [])
        if config is not None:
            worker_env |= checkpoint_key_env(checkpoint_dir, flow.name, checkpoint_key_file)
        worker_env |= launch_env(this_launch())
        raise typer.Exit(supervise(argv, strategy, storage, restore, worker_env))
    except typer.Exit:
        raise
    except ConfigError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(config_message(e))}")
        raise typer.Exit(EXIT_CONFIG) from None
    except WeirflowError as e:
        if worker and not is_retriable(e):
            if debug:
                # the traceback, and still the status that keeps the supervisor from restarting
                traceback.print_exc()
            err.print(f"[red]error:[/] {escape(str(e))} (not retriable: the job is not restarted)")
            raise typer.Exit(EXIT_NOT_RETRIABLE) from None
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(EXIT_FAILED) from None
