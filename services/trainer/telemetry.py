"""The trainer's metrics and spans: one span per training attempt, one per epoch.

The attempt's span is the current span while the session runs, so the
training child gets it as TRACEPARENT and every event the session publishes
(run.started, epoch.logged, run.completed) is its child. The child reports an
epoch when it has ended, with its duration; the epoch's span is recorded then,
starting that long before, and the epoch.logged it publishes is its child.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter, Gauge, Histogram

from shared.events import EpochLogged, Event, RunAssigned, RunCompleted, RunReleased
from shared.status import RunStatus
from shared.telemetry import RUN_ID_ATTRIBUTE, tracer

if TYPE_CHECKING:
    from services.trainer.session import TrainingSession
    from services.trainer.worker import Acceptance, Trainer

EPOCH_DURATION = Histogram(
    "trainyard_epoch_duration_seconds", "Wall time of a training epoch with its validation", ["device"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
ATTEMPTS_FINISHED = Counter(
    "trainyard_training_attempts_total",
    "Training attempts this trainer ended, by final status (released: handed back while draining)",
    ["status"],
)
ASSIGNMENTS_RECEIVED = Counter(
    "trainyard_trainer_assignments_total",
    "Assignments this trainer received: accepted, duplicate, or busy/draining (offered again later)",
    ["outcome"],
)
RUNNING = Gauge("trainyard_trainer_running_attempts", "Attempts this trainer is training now")

TrainerT = TypeVar("TrainerT", bound="Trainer")
TrainFn = Callable[[TrainerT, "TrainingSession"], Coroutine[Any, Any, None]]
EmitFn = Callable[[TrainerT, str, Event, str], Coroutine[Any, Any, None]]
AcceptFn = Callable[[TrainerT, RunAssigned], Coroutine[Any, Any, "Acceptance"]]


def traced_training(train: TrainFn[TrainerT]) -> TrainFn[TrainerT]:
    """Runs a training attempt inside its span (a child of the run.assigned it came from)."""

    @functools.wraps(train)
    async def train_in_span(self: TrainerT, session: TrainingSession) -> None:
        assignment = session.assignment
        attributes: dict[str, AttributeValue] = {
            RUN_ID_ATTRIBUTE: assignment.run_id,
            "trainyard.attempt": assignment.attempt,
            "trainyard.trainer_id": assignment.trainer_id,
            "trainyard.architecture": assignment.spec.architecture,
            "trainyard.device": self.device,
        }
        RUNNING.inc()
        try:
            with tracer().start_as_current_span("train run", attributes=attributes):
                await train(self, session)
        finally:
            RUNNING.dec()

    return train_in_span


def traced_events(emit: EmitFn[TrainerT]) -> EmitFn[TrainerT]:
    """Records an epoch span around each epoch.logged, and the outcome of each attempt."""

    @functools.wraps(emit)
    async def emit_in_span(self: TrainerT, kind: str, event: Event, dedup_key: str) -> None:
        if isinstance(event, RunReleased):
            ATTEMPTS_FINISHED.labels(status="released").inc()
        if isinstance(event, RunCompleted):
            ATTEMPTS_FINISHED.labels(status=str(event.status)).inc()
            if event.status != RunStatus.SUCCESS:
                trace.get_current_span().set_status(StatusCode.ERROR, (event.message or str(event.status))[:200])
        if not isinstance(event, EpochLogged):
            await emit(self, kind, event, dedup_key)
            return
        EPOCH_DURATION.labels(device=self.device).observe(event.epoch_time_s)
        # The child reports an epoch once it has ended: its span starts epoch_time_s ago.
        started_ns = time.time_ns() - int(event.epoch_time_s * 1e9)
        attributes: dict[str, AttributeValue] = {
            RUN_ID_ATTRIBUTE: event.run_id,
            "trainyard.epoch": event.epoch,
            "trainyard.total_epochs": event.total_epochs,
            "trainyard.loss": event.loss,
            **{f"trainyard.metrics.{name}": value for name, value in event.metrics.items() if value is not None},
        }
        with tracer().start_as_current_span("train epoch", start_time=started_ns, attributes=attributes):
            await emit(self, kind, event, dedup_key)

    return emit_in_span


def counted_assignments(accept: AcceptFn[TrainerT]) -> AcceptFn[TrainerT]:
    """Counts what became of each assignment; "busy" and "draining" ones are offered again (a retry)."""

    @functools.wraps(accept)
    async def accept_and_count(self: TrainerT, assignment: RunAssigned) -> Acceptance:
        outcome = await accept(self, assignment)
        ASSIGNMENTS_RECEIVED.labels(outcome=outcome).inc()
        return outcome

    return accept_and_count
