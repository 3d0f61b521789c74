"""The metrics service's spans and ingest lag: each epoch write is a span of the run's trace."""

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.util.types import AttributeValue
from prometheus_client import Histogram

from shared.events import EpochLogged, utcnow
from shared.telemetry import RUN_ID_ATTRIBUTE, tracer

INGEST_LAG = Histogram(
    "trainyard_epoch_ingest_lag_seconds", "From the trainer publishing an epoch to its being stored",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)

StoreT = TypeVar("StoreT")
RecordFn = Callable[[StoreT, EpochLogged], Awaitable[bool]]


def traced_ingest(record: RecordFn[StoreT]) -> RecordFn[StoreT]:
    """Stores an epoch inside a span (a child of the epoch.logged being processed)."""

    @functools.wraps(record)
    async def record_in_span(self: StoreT, event: EpochLogged) -> bool:
        attributes: dict[str, AttributeValue] = {RUN_ID_ATTRIBUTE: event.run_id, "trainyard.epoch": event.epoch}
        with tracer().start_as_current_span("store epoch", attributes=attributes) as span:
            stored = await record(self, event)
            span.set_attribute("trainyard.duplicate", not stored)
        if stored:
            # A redelivery's lag says nothing about the pipeline: only first writes count.
            INGEST_LAG.observe(max(0.0, (utcnow() - event.occurred_at).total_seconds()))
        return stored

    return record_in_span
