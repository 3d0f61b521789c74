"""Logging, tracing and the Prometheus endpoint, set up the same way in every service.

Traces: one run is one trace. The W3C context rides in NATS headers
(FastStream's telemetry middleware, see shared/bus.py), in the run's
document (`trace_context`, so a pass of the scheduler's placement loop can
continue the run's trace) and in the TRACEPARENT environment variable of the
training child. Spans go to the OTLP/HTTP exporter when
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set;
otherwise they are made (so context still propagates) and dropped.
"""

import logging
import os
from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from prometheus_client import start_http_server

from shared.settings import CommonSettings

TRACER_NAME = "trainyard"
# The OpenTelemetry convention for handing a context to a child process.
TRACEPARENT_ENV = "TRACEPARENT"
TRACESTATE_ENV = "TRACESTATE"
# Span attribute that names the run, so Tempo finds a run's trace by its id.
RUN_ID_ATTRIBUTE = "trainyard.run_id"

_PROPAGATOR = TraceContextTextMapPropagator()


class _SkipHeartbeats(Sampler):
    """Keeps heartbeats out of traces: one every few seconds per trainer is noise.

    Dropped even inside a run's trace (a trainer's last heartbeat is sent from
    its training task); the scheduler's processing follows the unsampled flag.
    Every other span follows its parent, and a root span is always sampled.
    """

    def __init__(self) -> None:
        self._otherwise = ParentBased(root=ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if "trainer.heartbeat" in name:
            return SamplingResult(Decision.DROP)
        return self._otherwise.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "SkipHeartbeats(ParentBased(ALWAYS_ON))"


def exporting_traces() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str) -> TracerProvider:
    """Install the global tracer provider for `trainyard-<service>`."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"trainyard-{service}", "service.namespace": "trainyard"}),
        sampler=_SkipHeartbeats(),
    )
    if exporting_traces():
        # Reads endpoint, headers, timeout from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def setup_telemetry(service: str, settings: CommonSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    setup_tracing(service)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def trace_carrier(context: Context | None = None) -> dict[str, str]:
    """The current (or given) trace context as W3C headers; empty when there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def run_trace_context(run_id: str) -> dict[str, str]:
    """Names the run on the current span; returns the context to store in the run's document."""
    trace.get_current_span().set_attribute(RUN_ID_ATTRIBUTE, run_id)
    return trace_carrier()


def context_from_carrier(carrier: Mapping[str, str] | None) -> Context:
    """The context a carrier names, or an empty one (a new trace starts)."""
    return _PROPAGATOR.extract(dict(carrier or {}))


def child_process_env() -> dict[str, str]:
    """TRACEPARENT (and TRACESTATE) for a child process, so its work joins the current trace."""
    carrier = trace_carrier()
    env = {}
    if "traceparent" in carrier:
        env[TRACEPARENT_ENV] = carrier["traceparent"]
    if "tracestate" in carrier:
        env[TRACESTATE_ENV] = carrier["tracestate"]
    return env


def context_from_environment(environ: Mapping[str, str] | None = None) -> Context:
    """The context a parent process handed over in TRACEPARENT/TRACESTATE."""
    environ = os.environ if environ is None else environ
    carrier = {"traceparent": environ.get(TRACEPARENT_ENV, ""), "tracestate": environ.get(TRACESTATE_ENV, "")}
    return context_from_carrier({k: v for k, v in carrier.items() if v})


def continue_trace(carrier: Mapping[str, str] | None) -> Context:
    """The context to work in for a run: the current one when it already is the
    run's trace (an event of that run is being handled), else the run's stored one."""
    current = otel_context.get_current()
    stored = context_from_carrier(carrier)
    stored_span = trace.get_current_span(stored).get_span_context()
    current_span = trace.get_current_span(current).get_span_context()
    if not stored_span.is_valid or (current_span.is_valid and current_span.trace_id == stored_span.trace_id):
        return current
    return stored
