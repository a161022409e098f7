"""Serving ``/metrics`` in the Prometheus text format from a background thread.

The port is bound with ``SO_REUSEADDR``: when the supervisor restarts a
killed worker, the new worker binds the same port at once, even while the
old connections sit in ``TIME_WAIT``.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

DEFAULT_HOST = "127.0.0.1"


class _Server(ThreadingMixIn, WSGIServer):
    allow_reuse_address = True
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes every few seconds would drown the job's own log."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


class MetricsServer:
    """A running ``/metrics`` endpoint.

    Attributes:
        host: the bound address.
        port: the bound port (the real one when 0 was asked for).
    """

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    registry: CollectorRegistry, port: int, host: str = DEFAULT_HOST
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread.

    Args:
        registry: the metrics to expose.
        port: TCP port; 0 picks a free one.
        host: address to bind; loopback by default, so nothing is exposed
            beyond the machine unless asked.

    Returns:
        The running :class:`MetricsServer`.

    Raises:
        OSError: the address cannot be bound (port taken by another program).
    """
    app = make_wsgi_app(registry)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_cls = type("_FamilyServer", (_Server,), {"address_family": family})
    server = make_server(host, port, app, server_class=server_cls, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        daemon=True,
        name="weirflow-metrics-http",
    )
    thread.start()
    return MetricsServer(server, thread)
