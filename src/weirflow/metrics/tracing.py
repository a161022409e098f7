"""Traces through the pipeline: W3C trace context in record headers, one span per batch.

With tracing on (``weirflow run --otel``, ``Dataflow.run(tracing=True)``),
sources hand every record's headers to the runtime, operators pass them on
with the record, and the runtime opens one span per buffer of records and
operator (never one per record):

1. a task's first operator continues the trace context of the first record
   of the buffer that carries a ``traceparent`` header, and links the other
   trace contexts of the buffer (at most :data:`MAX_LINKS`); a buffer
   without one starts a trace (never a child of a span current in the thread);
2. a chained operator's span is a child of the span of the operator that
   called it (they run nested, in one call);
3. a sink writes each record's headers with its ``traceparent`` pointing at
   the sink's span when the record belongs to that span's trace, and keeps
   the record's own ``traceparent`` otherwise (:meth:`BatchTracer.stamp`);
4. a dead letter keeps the failed record's headers, so its trace id.

Sampling and export follow the standard ``OTEL_*`` environment variables
(``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_EXPORTER``, ...), read by the OpenTelemetry SDK
(``pip install 'weirflow[otel]'``). This module imports OpenTelemetry only
when tracing is turned on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from weirflow.errors import ConfigError
from weirflow.records import RecordHeaders

#: the W3C trace-context header (https://www.w3.org/TR/trace-context/)
TRACEPARENT = "traceparent"
#: span links a buffer's span carries at most (the other trace contexts of the buffer)
MAX_LINKS = 32
_INSTALL_HINT = "tracing needs OpenTelemetry: pip install 'weirflow[otel]'"


def traceparent_of(headers: RecordHeaders) -> bytes | None:
    """Return the ``traceparent`` header's value in ``headers``, or ``None``."""
    for name, value in headers:
        if name == TRACEPARENT:
            return value
    return None


def trace_id_of(headers: RecordHeaders) -> str | None:
    """Return the 32-hex-digit trace id of the ``traceparent`` in ``headers``, or ``None``.

    A value that is not ``version-traceid-spanid-flags`` gives ``None``.
    """
    value = traceparent_of(headers)
    if value is None:
        return None
    parts = value.split(b"-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    return parts[1].decode("ascii", errors="replace")


def configure_from_env() -> None:
    """Install an SDK tracer provider configured by the ``OTEL_*`` environment variables.

    The sampler comes from ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``
    and the resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``
    (the SDK reads them); the exporters named by ``OTEL_TRACES_EXPORTER``
    (comma-separated, default ``otlp``, ``none`` for none) are found by their
    ``opentelemetry_traces_exporter`` entry points. A tracer provider already
    installed (by the application, or a test) is kept.

    Raises:
        ConfigError: OpenTelemetry's SDK is not installed, or an exporter
            named in ``OTEL_TRACES_EXPORTER`` is not installed.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ConfigError(_INSTALL_HINT) from e
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "weirflow"}))
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (n.strip() for n in names.split(",")):
        if not name or name == "none":
            continue
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed (for otlp: "
                "pip install opentelemetry-exporter-otlp; 'console' prints spans; 'none' "
                "exports nothing)"
            )
        exporter = next(iter(found)).load()()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _distinct_traceparents(headers: Sequence[RecordHeaders]) -> list[bytes]:
    """The buffer's distinct ``traceparent`` values in order, at most ``MAX_LINKS + 1``."""
    found: dict[bytes, None] = {}
    for h in headers:
        value = traceparent_of(h)
        if value is not None and value not in found:
            found[value] = None
            if len(found) > MAX_LINKS:
                break
    return list(found)


class BatchTracer:
    """Opens the spans of one subtask's operators, and stamps trace context into headers.

    Args:
        job: the job name (a span attribute).

    Raises:
        ConfigError: OpenTelemetry is not installed.
    """

    def __init__(self, job: str) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as e:
            raise ConfigError(_INSTALL_HINT) from e
        self._context = context
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = trace.get_tracer("weirflow")
        self.job = job

    @contextmanager
    def batch_span(
        self, operator: str, subtask: int, headers: Sequence[RecordHeaders], *, chained: bool
    ) -> Iterator[Any]:
        """Open the span of one buffer of ``len(headers)`` records at one operator.

        A chained operator's span is a child of the current span (the calling
        operator's); a task's first operator's span continues the buffer's
        first trace context and links the others, or starts a trace when the
        buffer has none (see the module docstring).

        Args:
            operator: the operator's name (the span's name).
            subtask: the subtask index (an attribute).
            headers: the headers of each record of the buffer.
            chained: whether the operator was called by the operator before it.

        Yields:
            The span, current while the operator processes the buffer.
        """
        parent = None
        links = []
        if not chained:
            contexts = [self._extract(v) for v in _distinct_traceparents(headers)]
            parent = contexts[0] if contexts else self._context.Context()
            links = [
                self._trace.Link(self._trace.get_current_span(c).get_span_context())
                for c in contexts[1:]
            ]
        attributes = {
            "weirflow.job": self.job,
            "weirflow.operator": operator,
            "weirflow.subtask": subtask,
            "weirflow.records": len(headers),
        }
        with self.tracer.start_as_current_span(
            operator, context=parent, links=links, attributes=attributes
        ) as span:
            yield span

    def _extract(self, traceparent: bytes) -> Any:
        return self._propagator.extract({TRACEPARENT: traceparent.decode("ascii", "replace")})

    def stamp(self, headers: Sequence[RecordHeaders]) -> list[RecordHeaders]:
        """Point the ``traceparent`` of records of the current span's trace at that span.

        A record of another trace keeps its own ``traceparent``, one without
        trace context gets none; every other header is kept as it is.

        Args:
            headers: the headers of each record, as the sink received them.

        Returns:
            The headers to write, one tuple per record.
        """
        ctx = self._trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return list(headers)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        ours = f"{ctx.trace_id:032x}"
        mine = carrier[TRACEPARENT].encode()
        out: list[RecordHeaders] = []
        for h in headers:
            if trace_id_of(h) != ours:
                out.append(h)
            else:
                out.append(tuple((n, mine if n == TRACEPARENT else v) for n, v in h))
        return out
