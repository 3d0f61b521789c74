"""Trace context helpers: carriers, the child's environment, the run's stored context, sampling."""

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import (
    _SkipHeartbeats,
    child_process_env,
    context_from_environment,
    continue_trace,
    trace_carrier,
)


def _tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=_SkipHeartbeats())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _trace_id(ctx: otel_context.Context) -> int:
    return trace.get_current_span(ctx).get_span_context().trace_id


def test_child_environment_carries_the_current_span() -> None:
    tracer, _ = _tracer()
    with tracer.start_as_current_span("train run") as span:
        env = child_process_env()
    assert env["TRACEPARENT"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    child = context_from_environment(env)
    assert trace.get_current_span(child).get_span_context().span_id == span.get_span_context().span_id
    assert child_process_env() == {}  # no current span: nothing to hand over


def test_continue_trace_prefers_the_current_span_of_the_same_run() -> None:
    tracer, _ = _tracer()
    with tracer.start_as_current_span("POST /v1/runs"):
        stored = trace_carrier()
        with tracer.start_as_current_span("run.created process") as handling:
            # Handling the run's own event: stay under that event's span.
            assert trace.get_current_span(continue_trace(stored)) is handling
    with tracer.start_as_current_span("placement pass of another trace") as other:
        ctx = continue_trace(stored)
        assert _trace_id(ctx) != other.get_span_context().trace_id
        assert f"{_trace_id(ctx):032x}" == stored["traceparent"].split("-")[1]
    # Nothing stored (a run from before tracing): work goes on in the current context.
    assert continue_trace({}) is otel_context.get_current()


def test_heartbeats_are_never_sampled_even_inside_a_run() -> None:
    tracer, exporter = _tracer()
    with tracer.start_as_current_span("train run"):
        with tracer.start_as_current_span("t1.trainer.heartbeat create") as beat:
            assert not beat.get_span_context().trace_flags.sampled
            with tracer.start_as_current_span("t1.trainer.heartbeat publish") as publish:
                assert not publish.is_recording()
        with tracer.start_as_current_span("train epoch"):
            pass
    with tracer.start_as_current_span("trainer.heartbeat create"):
        pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["train epoch", "train run"]
