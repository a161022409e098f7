"""The /metrics endpoint: Prometheus text format, loopback by default, the port reusable at once."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from weirflow.metrics import JobRegistry, serve_metrics


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.labels.get("job") == "exp"
    }


def test_serves_the_registry_in_prometheus_text_format() -> None:
    m = JobRegistry("exp")
    m.triggered.inc(3)
    server = serve_metrics(m.registry, 0)
    try:
        assert server.host == "127.0.0.1"
        assert scrape(server.url)["weirflow_checkpoints_triggered_total"] == 3
        m.triggered.inc()
        assert scrape(server.url)["weirflow_checkpoints_triggered_total"] == 4
    finally:
        server.close()


def test_the_port_is_free_again_right_after_close() -> None:
    """Scenario: a worker that served scrapes is replaced; the next one binds the same port."""
    m = JobRegistry("exp")
    first = serve_metrics(m.registry, 0)
    port = first.port
    scrape(first.url)  # leaves a connection in TIME_WAIT on the server side
    first.close()
    second = serve_metrics(m.registry, port)
    try:
        assert second.port == port
        assert "weirflow_checkpoints_triggered_total" in scrape(second.url)
    finally:
        second.close()


def test_a_port_held_by_another_program_is_an_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(OSError):
            serve_metrics(JobRegistry("exp").registry, holder.getsockname()[1])
    finally:
        holder.close()


def test_unknown_paths_still_answer_metrics_or_nothing_else() -> None:
    server = serve_metrics(JobRegistry("exp").registry, 0)
    try:
        url = f"http://{server.host}:{server.port}/favicon.ico"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status in (200, 404)
    finally:
        server.close()
