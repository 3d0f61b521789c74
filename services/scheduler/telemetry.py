"""The scheduler's gauges and spans: runs and the fleet as gauges, assignments as spans.

The scheduler owns the runs' lifecycle and the trainer registry, so it is the
one service that can say how many runs are in each status and how many
trainers (and accelerators) are idle, busy, draining or lost. Every replica
reports the same numbers from the database; dashboards take max(). The queue's
depth, assignments, retries and lost trainers are counted where they happen
(scheduling.py).
"""

import asyncio
import functools
import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from opentelemetry.util.types import AttributeValue
from prometheus_client import Gauge

from services.scheduler.placement import QueuedRun
from services.scheduler.store import SchedulerStore
from shared.events import utcnow
from shared.settings import SchedulerSettings
from shared.status import RunStatus
from shared.telemetry import RUN_ID_ATTRIBUTE, continue_trace, tracer

log = logging.getLogger(__name__)

RUNS = Gauge("trainyard_runs", "Runs by status", ["status"])
TRAINERS = Gauge(
    "trainyard_trainers",
    "Trainers by accelerator and state (idle, busy, draining: online; lost: silent, seen within the last hour)",
    ["accelerator", "state"],
)
ACCELERATORS = Gauge(
    "trainyard_trainer_accelerators",
    "Accelerators of trainers seen within the hour: in_use, free (online, taking runs), unavailable (draining or lost)",
    ["accelerator", "state"],
)
GAUGE_REFRESH_S = 5.0
# A trainer silent for longer than the heartbeat timeout but seen within this window counts as lost.
LOST_WINDOW = timedelta(hours=1)
TRAINER_STATES = ("idle", "busy", "draining", "lost")
ACCELERATOR_STATES = ("in_use", "free", "unavailable")
_names_seen: set[str] = set()


async def refresh_gauges(store: SchedulerStore, settings: SchedulerSettings) -> None:
    """Recount runs by status and the fleet by state."""
    now = utcnow()
    for status in RunStatus:
        RUNS.labels(status=str(status)).set(await store.runs.count_documents({"status": str(status)}))

    trainers: Tally[tuple[str, str]] = Tally()
    accelerators: Tally[tuple[str, str]] = Tally()
    names: set[str] = set()
    online_since = now - timedelta(seconds=settings.trainer_timeout_s)
    async for doc in store.trainers.find({"last_seen": {"$gte": now - LOST_WINDOW}}):
        first: dict[str, Any] = (doc.get("accelerators") or [{"name": "CPU", "count": 1}])[0]
        name, capacity = str(first["name"]), int(first.get("count", 1))
        free = min(capacity, max(0, int(doc.get("free", capacity))))
        names.add(name)
        if doc.get("lost") or doc["last_seen"] < online_since:
            state = "lost"
            accelerators[(name, "unavailable")] += capacity
        elif doc.get("draining"):
            state = "draining"
            accelerators[(name, "in_use")] += capacity - free
            accelerators[(name, "unavailable")] += free
        else:
            state = "busy" if doc.get("assignments") else "idle"
            accelerators[(name, "in_use")] += capacity - free
            accelerators[(name, "free")] += free
        trainers[(name, state)] += 1
    # Every name seen before is set too, so a trainer that went away reads 0, not its last value.
    _names_seen.update(names)
    for name in _names_seen:
        for state in TRAINER_STATES:
            TRAINERS.labels(accelerator=name, state=state).set(trainers[(name, state)])
        for state in ACCELERATOR_STATES:
            ACCELERATORS.labels(accelerator=name, state=state).set(accelerators[(name, state)])


async def refresh_gauges_forever(store: SchedulerStore, settings: SchedulerSettings) -> None:
    while True:
        try:
            await refresh_gauges(store, settings)
        except Exception:
            # Gauges are best effort: an outage must not stop the scheduler.
            log.exception("refreshing the scheduler's gauges failed")
        await asyncio.sleep(GAUGE_REFRESH_S)


class _HasStore(Protocol):
    store: SchedulerStore


SchedulerT = TypeVar("SchedulerT", bound=_HasStore)
OutcomeT = TypeVar("OutcomeT", bound=str)
AssignFn = Callable[[SchedulerT, QueuedRun, str], Awaitable[OutcomeT]]


def traced_assignment(assign: AssignFn[SchedulerT, OutcomeT]) -> AssignFn[SchedulerT, OutcomeT]:
    """Runs an assignment in the run's own trace, whatever pass of the scheduler made it.

    Placement happens in the scheduling loop, outside any event of the run; the
    run's document carries the context the API stored when it created the run.
    """

    @functools.wraps(assign)
    async def assign_in_run_trace(self: SchedulerT, run: QueuedRun, trainer_id: str) -> OutcomeT:
        # The queue index read the run's trace context with the rest of it: no read here.
        parent = continue_trace(run.trace_context)
        attributes: dict[str, AttributeValue] = {RUN_ID_ATTRIBUTE: run.run_id, "trainyard.trainer_id": trainer_id,
                                                 "trainyard.accelerator": run.accelerator.name}
        with tracer().start_as_current_span("assign run", context=parent, attributes=attributes) as span:
            outcome = await assign(self, run, trainer_id)
            span.set_attribute("trainyard.assigned", outcome == "assigned")
            span.set_attribute("trainyard.assignment_outcome", outcome)
            return outcome

    return assign_in_run_trace
