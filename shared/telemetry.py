"""Logging, tracing and the Prometheus endpoint, set up the same way in every service."""

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from shared.settings import CommonSettings


def setup_telemetry(service: str, settings: CommonSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    provider = TracerProvider(resource=Resource.create({"service.name": f"trainyard-{service}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Optional dependency: only deployments that export traces install it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[import-not-found,unused-ignore]
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
