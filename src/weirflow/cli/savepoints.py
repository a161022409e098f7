"""``weirflow savepoint``, ``weirflow stop`` and ``weirflow rescale``: a running job's life cycle.

Each finds the running job through its control endpoint
(:mod:`weirflow.runtime.endpoint`), named by the job's name and its
``--checkpoint-dir``:

- ``savepoint JOB`` takes a savepoint (an aligned checkpoint copied into a
  self-contained folder) and prints its URL; the job runs on;
- ``stop JOB --savepoint`` takes one as the job's stop checkpoint: sources
  read nothing after it, every sink commits it, the job exits 0;
- ``rescale JOB --parallelism P`` stops the job with a savepoint and starts it
  again, with the arguments it was launched with, at parallelism ``P``
  restoring that savepoint; it prints the downtime: from the stop request
  until the new run's control endpoint is up (its restore runs after that).

``weirflow run`` uses :func:`stop_with_savepoint_on_signal` and
:func:`job_endpoint` to give every job with checkpoints its endpoint and to
make SIGTERM a stop with a savepoint into the default folder.

Exit status: 0 done; 1 the job wrote no savepoint (the message says why);
2 no such running job, or bad arguments.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from weirflow.checkpoint import CheckpointConfig
from weirflow.cli.app import app
from weirflow.errors import ConfigError, WeirflowError
from weirflow.runtime.endpoint import (
    ControlEndpoint,
    EndpointInfo,
    Launch,
    ask_savepoint,
    endpoint_file,
    read_endpoint,
)
from weirflow.runtime.ray_cluster import detached_savepoint
from weirflow.runtime.savepoint_requests import SavepointRequests

#: The environment variable through which ``weirflow run``'s supervisor tells its
#: worker how the job was launched (JSON of :class:`~weirflow.runtime.endpoint.Launch`).
LAUNCH_ENV = "WEIRFLOW_LAUNCH"
_DEFAULT_DIR = "weirflow-data/checkpoints"
_EXIT_WAIT_S = 120.0
_START_WAIT_S = 120.0
_POLL_S = 0.05
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")
out = Console(soft_wrap=True)

CheckpointDir = Annotated[
    str, typer.Option(help="The job's checkpoint storage (as given to weirflow run).")
]
Into = Annotated[
    str | None,
    typer.Option(help="Savepoint folder (default: <checkpoint-dir>/<job>/savepoints/...)."),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="The Ray cluster (auto, HOST:PORT, ray://HOST:PORT) of a job run with "
        "--ray-detached: its coordinator actor is asked."
    ),
]


def this_launch() -> Launch:
    """How this ``weirflow run`` was launched: from the supervisor, else from ``sys.argv``."""
    inherited = os.environ.get(LAUNCH_ENV)
    if inherited:
        return msgspec.json.decode(inherited, type=Launch)
    argv = sys.argv[2:] if sys.argv[1:2] == ["run"] else []
    return Launch(argv=argv, cwd=os.getcwd(), pid=os.getpid())


def launch_env(launch: Launch) -> dict[str, str]:
    """The environment entry that hands ``launch`` to a worker process."""
    return {LAUNCH_ENV: msgspec.json.encode(launch).decode()}


def stop_with_savepoint_on_signal(stop: threading.Event, checkpoints: bool) -> SavepointRequests:
    """SIGTERM and Ctrl-C stop the job: with a savepoint into the default folder when it
    takes checkpoints, else by setting ``stop``. Returns the job's savepoint requests."""
    savepoints = SavepointRequests()

    def on_signal(*_: object) -> None:
        if not checkpoints:
            stop.set()
            return
        done = savepoints.submit(None, stop=True)
        done.add_done_callback(
            lambda f: (
                log.info("stop savepoint written to %s", f.result())
                if f.exception() is None
                else log.warning("no stop savepoint: %s", f.exception())
            )
        )

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return savepoints


def job_endpoint(
    savepoints: SavepointRequests, config: CheckpointConfig | None, job: str
) -> ControlEndpoint | None:
    """Start the running job's control endpoint (``None`` for a job without checkpoints)."""
    if config is None:
        return None
    endpoint = ControlEndpoint(savepoints, config.storage, job, this_launch())
    endpoint.start()
    return endpoint


def _fail(e: WeirflowError) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(e))}")
    return typer.Exit(2 if isinstance(e, ConfigError) else 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # an exited process its parent has not reaped yet is a zombie: it runs nothing
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_for_exit(info: EndpointInfo) -> None:
    pid = info.launch.pid
    if pid is None:
        return
    deadline = time.monotonic() + _EXIT_WAIT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise ConfigError(
                f"job {info.job!r} took its stop savepoint but process {pid} "
                f"still runs after {_EXIT_WAIT_S:.0f} s"
            )
        time.sleep(_POLL_S)


@app.command("savepoint")
def savepoint(
    job: Annotated[str, typer.Argument(help="The running job's name.")],
    checkpoint_dir: CheckpointDir = _DEFAULT_DIR,
    into: Into = None,
    ray: RayAddress = None,
) -> None:
    """Take a savepoint of a running job and print its folder."""
    try:
        if ray is not None:
            url = detached_savepoint(ray, job, into, stop=False)
        else:
            url = ask_savepoint(read_endpoint(checkpoint_dir, job), into, stop=False)
    except WeirflowError as e:
        raise _fail(e) from None
    out.print(url, highlight=False)


@app.command("stop")
def stop(
    job: Annotated[str, typer.Argument(help="The running job's name.")],
    checkpoint_dir: CheckpointDir = _DEFAULT_DIR,
    savepoint: Annotated[
        bool, typer.Option("--savepoint", help="Stop with a savepoint (always taken).")
    ] = True,
    into: Into = None,
    ray: RayAddress = None,
) -> None:
    """Stop a running job with a savepoint (every sink commits it) and print its folder."""
    try:
        if ray is not None:
            url = detached_savepoint(ray, job, into, stop=True)
        else:
            info = read_endpoint(checkpoint_dir, job)
            url = ask_savepoint(info, into, stop=True)
            _wait_for_exit(info)
    except WeirflowError as e:
        raise _fail(e) from None
    out.print(url, highlight=False)


def relaunch_args(argv: list[str], parallelism: int, restore: str) -> list[str]:
    """``weirflow run`` arguments ``argv`` with ``--parallelism`` and ``--restore`` replaced.

    ``--fresh`` is dropped, as the job now restores ``restore``.
    """
    replaced = ("--parallelism", "--restore")
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in replaced:
            skip = True
            continue
        if arg == "--fresh" or any(arg.startswith(f"{r}=") for r in replaced):
            continue
        kept.append(arg)
    return [*kept, f"--parallelism={parallelism}", f"--restore={restore}"]


def _wait_for_start(
    job: str, checkpoint_dir: str, old: EndpointInfo, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + _START_WAIT_S
    while True:
        try:
            info = read_endpoint(checkpoint_dir, job)
        except ConfigError:
            info = old
        if info.token != old.token:
            return
        if proc.poll() is not None:
            raise ConfigError(
                f"the rescaled job {job!r} exited with status {proc.returncode} before it ran"
            )
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the rescaled job {job!r} did not start within {_START_WAIT_S:.0f} s"
            )
        time.sleep(_POLL_S)


@app.command("rescale")
def rescale(
    job: Annotated[str, typer.Argument(help="The running job's name.")],
    parallelism: Annotated[int, typer.Option(min=1, help="The new parallelism.")],
    checkpoint_dir: CheckpointDir = _DEFAULT_DIR,
    into: Into = None,
) -> None:
    """Stop a running job with a savepoint and restart it from there at a new parallelism.

    The new run starts in the background with the arguments the job was
    launched with; its output goes to ``<job-endpoints>/<job>.log``.
    """
    try:
        info = read_endpoint(checkpoint_dir, job)
        if not info.launch.argv:
            raise ConfigError(
                f"job {job!r} was not started by weirflow run, so it cannot be relaunched: stop "
                "it with a savepoint and start it with --restore SAVEPOINT"
            )
        started = time.monotonic()
        url = ask_savepoint(info, into, stop=True)
        _wait_for_exit(info)
        # the relaunched job's output goes next to its endpoint file
        log_path = endpoint_file(checkpoint_dir, job).with_suffix(".log")
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "weirflow.cli",
                    "run",
                    *relaunch_args(info.launch.argv, parallelism, url),
                ],
                cwd=info.launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_start(job, checkpoint_dir, info, proc)
        downtime_ms = int((time.monotonic() - started) * 1000)
    except WeirflowError as e:
        raise _fail(e) from None
    out.print(
        f"job {job} rescaled to parallelism {parallelism} from savepoint {url}; "
        f"downtime {downtime_ms} ms; process {proc.pid} logs to {log_path}",
        highlight=False,
    )
