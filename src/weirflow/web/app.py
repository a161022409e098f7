"""The dashboard: a read-only starlette application over a :class:`~weirflow.web.JobObserver`.

Routes (all ``GET``):

- ``/``: the dashboard page (static HTML and JavaScript, no build step);
- ``/api/job``: the job graph (operators, edges with partitioning and chaining, chains);
- ``/api/operators``: per operator, summed over subtasks: records in/out,
  filtered, late, dead-lettered, rates (records/s), the highest
  backpressure ratio and buffer usage of its task, its watermark;
- ``/api/checkpoints``: the checkpoint history (id, status, duration, sizes);
- ``/api/lag``: records not yet read per source split;
- ``/api/connectors``: per connector subtask of an external system, read live
  (a sink blocked in a retry wait still answers): circuit breaker state,
  retries by error class, rows written, rows rejected by code;
- ``/api/status``: the progress figures (events/s, watermark, lag, last checkpoint...);
- ``/api/workers``: the job's workers, each with where it is placed (a Ray
  node's id and address, or the host), its slots, state and subtasks.

The same application serves an in-process run (:class:`~weirflow.web.JobObserver`)
and a run on workers under a coordinator here
(:class:`~weirflow.web.cluster.ClusterObserver`: the graph, the progress of the
coordinator, the workers, and the operators' counts and connectors' reports of
the workers' heartbeats; its operator rows have no task figures, which stay in
the workers: backpressure, buffer usage and watermark are ``None``).

When a token is configured every request but the page's static script and
style must carry it, as ``Authorization: Bearer <token>`` or
``?token=<token>`` (the page passes on the one in its own address). The
command line requires a token whenever the dashboard binds to anything but
a loopback address.
"""

from __future__ import annotations

import hmac
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from weirflow.errors import ConfigError
from weirflow.metrics import (
    ConnectorSample,
    JobStatus,
    OperatorSample,
    TaskSample,
    progress_fields,
)

STATIC = Path(__file__).parent / "static"
_START_TIMEOUT_S = 10.0
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ObservedJob(Protocol):
    """What the dashboard reads of a job (:class:`~weirflow.web.JobObserver`,
    :class:`~weirflow.web.cluster.ClusterObserver`)."""

    clock: Callable[[], int]

    def status(self) -> JobStatus:
        """The latest sample."""
        ...

    def connectors(self) -> tuple[ConnectorSample, ...]:
        """Every reporting connector, read now."""
        ...

    def job_graph(self) -> dict[str, Any]:
        """Operators, edges and chains."""
        ...

    def workers(self) -> list[dict[str, Any]]:
        """One row per worker: ``worker``, ``host``, ``placed_on``, ``slots``, ``state``,
        ``subtasks``."""
        ...


class _TokenGuard(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The page's script and style are the same for everyone and are loaded
        # by the browser without the token; every piece of job data needs it.
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        given = given or request.query_params.get("token", "")
        # constant-time comparison: the token is the only guard on a non-local bind
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return await call_next(request)


def operator_rows(
    operators: Sequence[OperatorSample], tasks: Sequence[TaskSample] = ()
) -> list[dict[str, Any]]:
    """Sum subtask samples per operator, in the samples' order (job order).

    Args:
        operators: per operator subtask (a :class:`JobStatus`'s ``operators``).
        tasks: per task, for the task figures (an operator none of whose tasks has a
            sample, as in a job on workers, has ``None`` for each: not measured, not 0).

    Returns:
        One dict per operator: ``operator``, ``kind``, ``parallelism``,
        ``records_in``, ``records_out``, ``filtered``, ``late``,
        ``dead_lettered`` (records), ``in_rate``, ``out_rate`` (records/s),
        ``backpressured_ratio``, ``input_usage``, ``output_usage`` (0..1, the
        highest over the operator's tasks, or ``None``), ``watermark_ms`` (lowest,
        or ``None``).
    """
    by_task = {t.task: t for t in tasks}
    rows: dict[str, dict[str, Any]] = {}
    subtasks: defaultdict[str, int] = defaultdict(int)
    for s in operators:
        row = rows.setdefault(
            s.operator,
            {
                "operator": s.operator,
                "kind": s.kind,
                "records_in": 0,
                "records_out": 0,
                "filtered": 0,
                "late": 0,
                "dead_lettered": 0,
                "in_rate": 0.0,
                "out_rate": 0.0,
                "backpressured_ratio": None,
                "input_usage": None,
                "output_usage": None,
                "watermark_ms": None,
            },
        )
        subtasks[s.operator] += 1
        for k in ("records_in", "records_out", "filtered", "late", "dead_lettered"):
            row[k] += getattr(s, k)
        row["in_rate"] += s.in_rate
        row["out_rate"] += s.out_rate
        t = by_task.get(s.task)
        if t is not None:
            for k in ("backpressured_ratio", "input_usage", "output_usage"):
                row[k] = max(row[k] or 0.0, getattr(t, k))
            if t.watermark_ms is not None:
                wm = row["watermark_ms"]
                row["watermark_ms"] = t.watermark_ms if wm is None else min(wm, t.watermark_ms)
    for name, row in rows.items():
        row["parallelism"] = subtasks[name]
    return list(rows.values())


def connector_rows(samples: Sequence[ConnectorSample]) -> list[dict[str, Any]]:
    """One dict per connector subtask: ``operator``, ``subtask``, ``breaker`` (``closed``,
    ``half-open``, ``open``), ``retries`` and ``rejected`` (code → count), ``rows_written``."""
    return [{"operator": c.operator, "subtask": c.subtask, **asdict(c.stats)} for c in samples]


def create_app(observer: ObservedJob, token: str | None = None) -> Starlette:
    """Build the dashboard application for ``observer``.

    Args:
        observer: the observed run.
        token: when set, every request must carry it (see the module doc).

    Returns:
        The starlette application (serve it with uvicorn, or test it with
        ``starlette.testclient``).
    """

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def job(request: Request) -> Response:
        return JSONResponse(observer.job_graph())

    async def operators(request: Request) -> Response:
        status = observer.status()
        return JSONResponse(operator_rows(status.operators, status.tasks))

    async def checkpoints(request: Request) -> Response:
        return JSONResponse([asdict(c) for c in observer.status().checkpoints])

    async def lag(request: Request) -> Response:
        return JSONResponse(observer.status().split_lag)

    async def connectors(request: Request) -> Response:
        return JSONResponse(connector_rows(observer.connectors()))

    async def status(request: Request) -> Response:
        return JSONResponse(progress_fields(observer.status(), observer.clock()))

    async def workers(request: Request) -> Response:
        return JSONResponse(observer.workers())

    middleware = [Middleware(_TokenGuard, token=token)] if token else []
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/job", job),
            Route("/api/operators", operators),
            Route("/api/checkpoints", checkpoints),
            Route("/api/lag", lag),
            Route("/api/connectors", connectors),
            Route("/api/status", status),
            Route("/api/workers", workers),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
    )


class DashboardServer:
    """The dashboard served by uvicorn on a daemon thread.

    Attributes:
        host: the bound address.
        port: the port asked for.
    """

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        """Ask uvicorn to exit and wait for its thread (bounded)."""
        self._server.should_exit = True
        self._thread.join(timeout=5)


def serve_dashboard(
    observer: ObservedJob, port: int, host: str = "127.0.0.1", token: str | None = None
) -> DashboardServer:
    """Serve the dashboard of ``observer`` at ``http://host:port/`` on a daemon thread.

    Args:
        observer: the observed run.
        port: TCP port.
        host: address to bind (loopback by default).
        token: the access token; required when ``host`` is not a loopback address.

    Returns:
        The running :class:`DashboardServer`.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token was given,
            the port cannot be bound (taken), or the server did not start
            within 10 s.
    """
    if host not in LOOPBACK and not token:
        raise ConfigError(
            f"the dashboard binds to {host}, beyond this machine: give it a token (--ui-token)"
        )
    # Bound here, not by uvicorn, so that a taken port is one clear error and not also
    # uvicorn's own log line.
    try:
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as e:
        raise ConfigError(
            f"the dashboard cannot listen on {host}:{port} ({os.strerror(e.errno or 0)}); "
            "choose another --ui-port"
        ) from e
    config = uvicorn.Config(
        create_app(observer, token), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread; this one leaves SIGTERM to the job
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="weirflow-dashboard"
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise ConfigError(f"the dashboard on {host}:{port} did not start within 10 s")
    return DashboardServer(server, thread, host, port)
